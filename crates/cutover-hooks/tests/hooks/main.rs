//! Integration tests for cutover-hooks: one test binary, one module per part.

mod notify;
mod replay;
mod webhooks;
