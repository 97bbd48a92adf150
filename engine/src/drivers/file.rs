//! Opening files and block devices for the file-backed drivers (being written).
