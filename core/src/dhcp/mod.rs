//! DHCP and ProxyDHCP (RFC 2131/2132, PXE 2.1): wire format and server machine.
