//! cutover-ledger
