//! OST storage, the OSS service and the client I/O engine.
