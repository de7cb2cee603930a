//! One module per subcommand; each turns parsed arguments into one library call.

pub mod check;
