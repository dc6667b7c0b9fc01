//! fedplane-vipd: VRRP v3 virtual IPs (issue 4). Not built yet.
