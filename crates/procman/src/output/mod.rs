//! Multiplexed process output and the log directory.
