//! cutover-server
