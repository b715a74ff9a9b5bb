//! Harness for sanboot's end-to-end tests: network namespaces, QEMU stations,
//! peer daemons, all started by PID and torn down afterwards.
