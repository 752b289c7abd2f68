//! Configuration: command line, environment and file, validated into plain values for the proxy.
