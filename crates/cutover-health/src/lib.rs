//! cutover-health
