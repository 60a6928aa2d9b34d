// SPDX-License-Identifier: BSD-3-Clause
//
// The `lb:`, `services:`, `backends:` and `sockmap:` sections: what they
// produce, and the exact error for each kind of bad input.
#include <gtest/gtest.h>

#include "config/config.h"

namespace ctplane::config {
namespace {

std::string err_of(const std::string& yaml)
{
	const auto r = load_string(yaml, "t.yaml");
	return r.ok() ? "(ok)" : r.err().str();
}

const char* kWeb = R"(services:
  - name: web
    vip: 10.96.0.10
    port: 80
    protocol: tcp
)";

TEST(config_services, services_and_backends_are_read)
{
	const auto r = load_string(R"(lb:
  max_services: 100
  max_backends: 1000
  maglev_size: 251
backends:
  - service: web
    address: 10.0.1.1
    port: 8080
    weight: 3
  - service: web6
    address: 2001:db8::1
    port: 8443
    state: draining
services:
  - name: web
    vip: 10.96.0.10
    port: 80
    protocol: tcp
  - name: web6
    vip: 2001:db8::10
    port: 443
    protocol: udp
    maglev_size: 65537
sockmap:
  enabled: true
  max_entries: 4096
  local_prefixes: [10.1.0.0/16, fd00::/64]
)",
				   "t.yaml");
	ASSERT_TRUE(r.ok()) << r.err().str();
	const lb::config& c = r.value().lb;
	EXPECT_EQ(c.max_services, 100u);
	EXPECT_EQ(c.max_backends, 1000u);
	EXPECT_EQ(c.maglev_size, 251u);
	ASSERT_EQ(c.services.size(), 2u);
	EXPECT_EQ(c.services[1].name, "web6");
	EXPECT_EQ(c.services[1].vip.family, 6);
	EXPECT_EQ(c.services[1].proto, 17);
	EXPECT_EQ(c.services[1].maglev_size, 65537u);
	ASSERT_EQ(c.backends.size(), 2u);
	EXPECT_EQ(c.backends[0].weight, 3u);
	EXPECT_EQ(c.backends[0].addr.addr[3], 1);
	EXPECT_EQ(c.backends[1].state, lb::backend_state::draining);
	EXPECT_EQ(lb::validate(c), "");
	const sockmap::config& s = r.value().sockmap;
	EXPECT_TRUE(s.enabled);
	EXPECT_EQ(s.max_entries, 4096u);
	ASSERT_EQ(s.local.size(), 2u);
	EXPECT_EQ(s.local[0].len, 16);
	EXPECT_EQ(s.local[1].family, 6);
}

TEST(config_services, bad_addresses_ports_and_protocols)
{
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.300\n    port: 80\n"),
		  "t.yaml:3:10: services[0].vip: expected an IPv4 or IPv6 address, got \"10.0.0.300\"");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 0\n"),
		  "t.yaml:4:11: services[0].port: 0 is out of range 1..65535");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    protocol: sctp\n"),
		  "t.yaml:5:15: services[0].protocol: expected tcp or udp, got \"sctp\"");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n"), "t.yaml:2:5: services[0]: a service needs a port");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    maglev_size: 1000\n"),
		  "t.yaml:5:18: services[0].maglev_size: 1000 is not a prime");
	EXPECT_EQ(err_of("services: {}\n"), "t.yaml:1:11: services: expected a sequence, got a mapping");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    ports: 81\n"),
		  "t.yaml:5:5: services[0].ports: unknown key (expected one of: flows_per_source, maglev_size, name, port, protocol, snat, syn_proxy, vip)");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 53\n    protocol: udp\n    syn_proxy: on\n"),
		  "t.yaml:2:5: services[0]: service \"a\": syn_proxy is for TCP services");
	EXPECT_EQ(err_of("services:\n  - name: a\n    vip: 10.0.0.1\n    port: 80\n    syn_proxy: maybe\n"),
		  "t.yaml:5:16: services[0].syn_proxy: expected off, on or auto, got maybe");
}

TEST(config_services, duplicates_and_references)
{
	const std::string web = kWeb;
	EXPECT_EQ(err_of(web + "  - name: web\n    vip: 10.96.0.11\n    port: 80\n"),
		  "t.yaml:6:5: services[1]: duplicate service name \"web\"");
	EXPECT_EQ(err_of(web + "  - name: web2\n    vip: 10.96.0.10\n    port: 80\n"),
		  "t.yaml:6:5: services[1]: 10.96.0.10:80 is already service \"web\"");
	EXPECT_EQ(err_of(web + "backends:\n  - service: api\n    address: 10.0.1.1\n    port: 8080\n"),
		  "t.yaml:7:14: backends[0].service: unknown service \"api\"");
	EXPECT_EQ(err_of(web + "backends:\n  - {service: web, address: 10.0.1.1, port: 8080}\n"
			       "  - {service: web, address: 10.0.1.1, port: 8080}\n"),
		  "t.yaml:8:5: backends[1]: duplicate backend 10.0.1.1:8080 of service \"web\"");
	EXPECT_EQ(err_of(web + "backends:\n  - {service: web, address: 10.0.1.1, port: 8080, weight: 70000}\n"),
		  "t.yaml:7:59: backends[0].weight: 70000 is out of range 0..65535");
	EXPECT_EQ(err_of(web + "backends:\n  - {service: web, address: 'fd00::1', port: 8080}\n"),
		  "t.yaml:7:29: backends[0].address: an IPv6 backend for the IPv4 service \"web\"");
	EXPECT_EQ(err_of(web + "backends:\n  - {service: web, address: 10.0.1.1, port: 8080, state: sleeping}\n"),
		  "t.yaml:7:58: backends[0].state: expected active, draining or down, got \"sleeping\"");
	EXPECT_EQ(err_of(web + "backends:\n  - {service: web, port: 8080}\n"),
		  "t.yaml:7:5: backends[0]: a backend needs an address");
	EXPECT_EQ(err_of(web + "lb:\n  max_services: 0\n"), "t.yaml:7:17: lb.max_services: 0 is out of range 1..1048576");
	EXPECT_EQ(err_of(web + "  - {name: b, vip: 10.96.0.11, port: 80}\nlb:\n  max_services: 1\n"),
		  "t.yaml:2:3: services: 2 services exceed max_services (1)");
}

TEST(config_services, sockmap_section)
{
	EXPECT_EQ(err_of("sockmap:\n  enabled: true\n"),
		  "t.yaml:2:3: sockmap: enabled needs at least one entry in local_prefixes");
	EXPECT_EQ(err_of("sockmap:\n  local_prefixes: [10.1.0.1/16]\n"),
		  "t.yaml:2:20: sockmap.local_prefixes[0]: 10.1.0.1/16 has host bits set");
	EXPECT_EQ(err_of("sockmap:\n  local_prefixes: [10.1.0.0/33]\n"),
		  "t.yaml:2:20: sockmap.local_prefixes[0]: prefix length 33 exceeds 32");
	EXPECT_EQ(err_of("sockmap:\n  local_prefixes: [10.1.0.0]\n"),
		  "t.yaml:2:20: sockmap.local_prefixes[0]: expected a prefix like 10.0.0.0/8 or fd00::/64, got "
		  "\"10.1.0.0\"");
	EXPECT_EQ(err_of("sockmap:\n  max_entries: 1\n"), "t.yaml:2:16: sockmap.max_entries: 1 is out of range 2..67108864");
}

const char* kPorts = R"(ports:
  - {name: a, mac: "02:00:00:00:00:01", addresses: [10.0.0.1/24]}
  - {name: b, device: "net_tap0,iface=ct0", mac: "02:00:00:00:00:02"}
)";

TEST(config_ports, ports_neighbors_and_routes_are_read)
{
	const auto r = load_string(std::string(kPorts) + R"(workers: 2
burst: 16
neighbors:
  - {address: 10.0.0.2, mac: "02:aa:bb:cc:dd:ee", port: a}
routes:
  - {prefix: 0.0.0.0/0, port: a, via: 10.0.0.2}
  - {prefix: "fd00::/8", port: b}
)",
				   "t.yaml");
	ASSERT_TRUE(r.ok()) << r.err().str();
	const ctplane_config& c = r.value();
	ASSERT_EQ(c.ports.size(), 2u);
	EXPECT_EQ(c.ports[1].device, "net_tap0,iface=ct0");
	EXPECT_EQ(c.ports[1].mac[5], 2);
	ASSERT_EQ(c.ports[0].addresses.size(), 1u);
	EXPECT_EQ(c.ports[0].addresses[0].addr[3], 1);
	EXPECT_EQ(c.ports[0].addresses[0].len, 24);
	EXPECT_EQ(c.workers, 2u);
	EXPECT_EQ(c.burst, 16u);
	ASSERT_EQ(c.neighbors.size(), 1u);
	EXPECT_EQ(c.neighbors[0].mac[5], 0xee);
	ASSERT_EQ(c.routes.size(), 2u);
	EXPECT_TRUE(c.routes[0].has_via);
	EXPECT_EQ(c.routes[1].port, 1u);
	EXPECT_FALSE(c.routes[1].has_via);
}

TEST(config_ports, bad_ports_neighbors_and_routes)
{
	const std::string p = kPorts;
	EXPECT_EQ(err_of("ports:\n  - {name: a, mac: 02:00}\n"),
		  "t.yaml:2:20: ports[0].mac: expected a MAC address like 02:00:00:00:00:01, got \"02:00\"");
	EXPECT_EQ(err_of("ports:\n  - {name: a}\n"), "t.yaml:2:5: ports[0]: a port needs a mac");
	EXPECT_EQ(err_of(p + "  - {name: a, mac: \"02:00:00:00:00:03\"}\n"), "t.yaml:4:5: ports[2]: duplicate port name \"a\"");
	EXPECT_EQ(err_of(p + "routes:\n  - {prefix: 10.0.0.0/8, port: c}\n"),
		  "t.yaml:5:32: routes[0].port: unknown port \"c\"");
	EXPECT_EQ(err_of(p + "routes:\n  - {prefix: 10.0.0.1/8, port: a}\n"),
		  "t.yaml:5:14: routes[0].prefix: 10.0.0.1/8 has host bits set");
	EXPECT_EQ(err_of(p + "routes:\n  - {prefix: 10.0.0.0/8, port: a, via: \"fd00::1\"}\n"),
		  "t.yaml:5:40: routes[0].via: next hop family differs from the prefix's");
	EXPECT_EQ(err_of(p + "routes:\n  - {prefix: 10.0.0.0/8, port: a}\n  - {prefix: 10.0.0.0/8, port: b}\n"),
		  "t.yaml:6:5: routes[1]: duplicate route (the same prefix as routes[0])");
	EXPECT_EQ(err_of(p + "neighbors:\n  - {address: 10.0.0.9, port: a}\n"), "t.yaml:5:5: neighbors[0]: a neighbor needs a mac");
	EXPECT_EQ(err_of("workers: 0\n"), "t.yaml:1:10: workers: 0 is out of range 1..64");
	EXPECT_EQ(err_of(p + "  - {name: c, mac: \"02:00:00:00:00:03\", addresses: [10.0.0.1]}\n"),
		  "t.yaml:4:53: ports[2].addresses[0]: expected an address with its prefix length like 10.0.0.1/24, got "
		  "\"10.0.0.1\"");
}

}  // namespace
}  // namespace ctplane::config
