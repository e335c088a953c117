//! Container networking: bridges, IPAM, veths, NAT and published ports.
//!
//! Will own: network records and a persistent IPAM that never hands one address to two containers; attaching a container's network namespace to a bridge through a veth (netlink); nftables NAT, isolation and port publishing in berth's own table; name resolution between containers of one network; the bridge, host, none and container:NAME modes.
