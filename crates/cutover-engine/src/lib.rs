//! cutover-engine
