//! One module per group of subcommands.

pub mod build;
pub mod demo;
pub mod deploy;
pub mod follow;
pub mod gate;
pub mod init;
pub mod login;
pub mod pipeline;
pub mod prune;
pub mod publish;
pub mod read;
pub mod server;
pub mod ship;
pub mod token;
pub mod watch;
