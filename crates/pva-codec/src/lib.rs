//! Sans-I/O PVAccess codec.
