// SPDX-License-Identifier: BSD-3-Clause
#include "control/stack.h"

#include <algorithm>
#include <cstring>

#include <stdexcept>

#include "control/control_loop.h"
#include "maps/mem.h"

namespace ctplane::dataplane {

std::unique_ptr<stack> stack::build(config::ctplane_config c, unsigned lcores, std::string* err)
{
	std::unique_ptr<stack> s(new stack());
	maps::set_table_hugepages(c.dpdk.table_hugepages);
	if (c.sockmap.enabled || c.sync.enabled)
		c.ct.events = true;  // the sockmap and sync follow CT events
	s->cfg_ = c;
	try {
		s->ct_ = std::make_unique<ct::table>(c.ct);
	} catch (const std::exception& e) {
		*err = std::string("ct: ") + e.what();
		return nullptr;
	}
	s->ct_->quotas().set_service_limits(service_limits(c.lb));
	try {
		s->sm_ = std::make_unique<sockmap::sockmap>(c.sockmap);
	} catch (const std::exception& e) {
		*err = std::string("sockmap: ") + e.what();
		return nullptr;
	}
	s->lb_ = std::make_unique<lb::balancer>(c.lb.max_services, c.lb.max_backends, c.lb.maglev_size);
	if (std::string e = s->lb_->apply(c.lb); !e.empty()) {
		*err = e;
		return nullptr;
	}
	s->pl_ = std::make_unique<pipeline>(*s->ct_, *s->lb_, *s->sm_, lcores);
	if (std::string e = s->pl_->build(c); !e.empty()) {
		*err = e;
		return nullptr;
	}
	s->pl_->set_service_modes(c);
	return s;
}

std::vector<ct::service_limit> service_limits(const lb::config& c)
{
	std::vector<ct::service_limit> v;
	for (const lb::service_spec& s : c.services) {
		if (s.flows_per_source == 0)
			continue;
		ct::service_limit l{};
		l.family = s.vip.family;
		l.proto = s.proto;
		l.port = s.port;
		std::memcpy(l.addr, s.vip.addr, 16);
		l.limit = s.flows_per_source;
		v.push_back(l);
	}
	return v;
}

bool service_limits_changed(const lb::config& a, const lb::config& b)
{
	// Cheap first: most reloads touch no service's quota.
	auto sum = [](const lb::config& c) {
		uint64_t n = 0;
		for (const lb::service_spec& s : c.services)
			n += s.flows_per_source != 0;
		return n;
	};
	if (sum(a) == 0 && sum(b) == 0)
		return false;
	auto key = [](const std::vector<ct::service_limit>& v) {
		std::vector<std::string> k;
		for (const ct::service_limit& l : v)
			k.emplace_back(reinterpret_cast<const char*>(&l), sizeof(l));
		std::sort(k.begin(), k.end());
		return k;
	};
	return key(service_limits(a)) != key(service_limits(b));
}

void stack::drain_events()
{
	const bool sm = sm_->enabled();
	if (!sm && !sink_ && sync_ == nullptr)
		return;
	ct_->drain_events([&](const ct::event& e) {
		if (sink_)
			sink_(e);
		if (sync_ != nullptr)
			sync_->on_event(e);
		if (sm)
			sm_->on_event(e, [&](const ct::tuple& d, sockmap::redirect* r) {
				// A translated flow's replies carry other addresses than
				// its original tuple reversed: it stays on the CT's path.
				ct::flow_view v;
				if (ct_->find(d, uint64_t{e.time_ms} * 1'000'000, &v) && (v.flags & ct::kNat))
					return false;
				return pl_->resolve(d, r);
			});
	});
}

void stack::tick(uint64_t now_ns, size_t gc_buckets, pass_stats* timing)
{
	auto mark = [&](const char* phase) {
		if (timing != nullptr)
			timing->phase(phase);
	};
	mark("ct_gc_resize");
	ct_->tick(now_ns, gc_buckets, gc_buckets != 0 ? 0 : pass_budget_ns());
	mark("fragments_fib");
	pl_->maintain(now_ns);
	pl_->syn_proxy_tick(now_ns);
	mark("events");
	drain_events();
	mark("sockmap_sync");
	if (sm_->enabled())
		sm_->sync(*ct_, now_ns);
}

}  // namespace ctplane::dataplane
