//! cutover-artifact
