// SPDX-License-Identifier: BSD-3-Clause
//
// The load balancer's parameters and its services and backends as plain
// structs. config/ fills them from the YAML `services:` and `backends:`
// sections; lb::balancer::apply() checks them again (a hand-built config
// cannot start a broken table) and returns what is wrong, naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "net/addr.h"

namespace ctplane::lb {

enum class backend_state : uint8_t {
	active = 0,    // takes new flows in proportion to its weight
	draining = 1,  // keeps its established flows, gets no new ones
	down = 2,      // gets no new flows; established flows keep their CT entry
};
const char* state_name(backend_state s) noexcept;

// Addresses are the tree's one kind (net/addr.h).
using net::address;
using net::parse_address;
using net::to_string;

struct service_spec {
	std::string name;  // unique; what backends reference
	address vip;
	uint16_t port = 0;  // 1..65535
	uint8_t proto = 6;  // 6 tcp, 17 udp
	uint32_t maglev_size = 0;  // a prime; 0: config::maglev_size
	// Flows per source prefix to this service (ct/quota.h), counted apart
	// from the global quota; 0: the global one applies. Not the load
	// balancer's: the CT enforces it.
	uint32_t flows_per_source = 0;
	// The SYN proxy (packet/synproxy.h) for this service: off, on, or auto
	// (on while the CT is past ct.syn_proxy.auto_ct_pct of max_entries, or
	// the service has ct.syn_proxy.auto_half_open half-open flows). TCP only.
	uint8_t syn_proxy = 0;  // kSynProxyOff / On / Auto
	// FullNAT (dpvs's FNAT): the client's address and port are translated
	// too, to the address of the appliance's port towards the backend and
	// a port of it (ct/snat.h), so the backend's replies come back through
	// the appliance whatever its routes. Not with syn_proxy.
	bool snat = false;
};
inline constexpr uint8_t kSynProxyOff = 0, kSynProxyOn = 1, kSynProxyAuto = 2;

struct backend_spec {
	std::string service;  // a service_spec::name
	address addr;         // same family as the service's VIP
	uint16_t port = 0;    // 1..65535
	uint32_t weight = 1;  // 0..kMaxWeight; 0 drains (same as state: draining)
	backend_state state = backend_state::active;
};

inline constexpr uint32_t kMaxWeight = 65535;
inline constexpr uint32_t kMaxMaglevSize = 1'000'003;  // a prime; tables are 4 B per slot

struct config {
	uint32_t max_services = 4096;
	uint32_t max_backends = 1u << 20;
	uint32_t maglev_size = 65537;  // the table size of a service without its own (prime): the largest
	// A service without its own maglev_size gets the smallest prime of a
	// ladder (251, 509, 1021, ... 65521, 131071, ...) holding this many
	// slots per backend, up to maglev_size (Maglev's paper: M >= 100 N
	// keeps the shares within ~1%); 0: every such service gets
	// maglev_size. 10K services of 10 backends take 1021 slots each
	// (40 MiB in all), not 65537 (2.6 GiB).
	uint32_t maglev_slots_per_backend = 100;
	std::vector<service_spec> services;
	std::vector<backend_spec> backends;
};

bool is_prime(uint64_t n) noexcept;

// "" if `c` is usable, else what is wrong (the service or backend named).
std::string validate(const config& c);

// A fingerprint of `c`: limits, services and backends in order (tells a
// config from the next one, not a hash against adversaries).
uint64_t digest(const config& c) noexcept;

}  // namespace ctplane::lb
