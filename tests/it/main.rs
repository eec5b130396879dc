//! Integration tests: the real binary against real files, a local repository and a real S3
//! server on loopback. One test binary, a module per topic.

mod architecture;
mod cli;
mod corpus;
mod crash;
mod damage;
mod dedup;
mod demo;
mod drill;
mod evidence;
mod faults;
mod format;
mod fuzz;
mod locks;
mod metadata;
mod object_lock;
mod prune;
mod ransomware;
mod reliability;
mod roundtrip;
mod s3;
mod samba;
mod service;
mod storage;
mod support;
mod upgrade;
mod uplink;
