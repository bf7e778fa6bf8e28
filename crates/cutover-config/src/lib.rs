//! cutover-config
