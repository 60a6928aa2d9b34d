// SPDX-License-Identifier: BSD-3-Clause
#include "control/ops.h"

#include "config/route_file.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <strings.h>

#include "ct/state.h"
#include "control/control_loop.h"
#include "control/ct_text.h"
#include "maps/mem.h"

namespace ctplane::dataplane {

namespace {

constexpr size_t kBudget = 14 * 1024;  // of the socket's 16 KiB, with room for the envelope
constexpr unsigned kMaxRows = 240;     // a telemetry dict holds 256 entries

std::vector<std::string> split(const std::string& s, char sep)
{
	std::vector<std::string> out;
	if (s.empty())
		return out;
	size_t b = 0;
	for (;;) {
		const size_t e = s.find(sep, b);
		out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
		if (e == std::string::npos)
			return out;
		b = e + 1;
	}
}

bool parse_u64(const std::string& s, uint64_t max, uint64_t* out) { return net::parse_decimal(s, max, out); }

std::string addr_str(const uint8_t* a, uint8_t family) { return net::to_string(a, family); }

std::string endpoint_str(const lb::endpoint& e) { return net::endpoint_string(e.addr, e.family, e.port); }

std::string mac_str(const uint8_t* m)
{
	char b[18];
	std::snprintf(b, sizeof(b), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
	return b;
}


// Rows of a table, until the reply would pass the socket's limit.
class table_out {
public:
	table_out(reply& r, std::vector<std::string> fields) : r_(r)
	{
		r_.row("fields", std::move(fields));
		size_ = r_.json_size();
	}
	// Rows past `limit` are refused as past the reply's room are.
	void set_limit(uint64_t limit) { limit_ = limit; }
	// false: no room (the caller stops and reports where to go on).
	bool add(std::vector<std::string> row)
	{
		size_t n = 16;
		for (const std::string& s : row)
			n += s.size() + 4;
		if (size_ + n > kBudget || rows_ == kMaxRows || rows_ >= limit_)
			return false;
		size_ += n;
		r_.row(std::to_string(rows_++), std::move(row));
		return true;
	}
	unsigned rows() const { return rows_; }
	// next: the cursor of the first row not in this page, 0 (or "") once
	// the list is done.
	void finish(uint64_t next)
	{
		r_.num("rows", rows_);
		r_.num("next", next);
	}
	void finish(const std::string& next)
	{
		if (next.empty())
			return finish(0);
		r_.num("rows", rows_);
		r_.text("next", next);
	}

private:
	reply& r_;
	size_t size_;
	unsigned rows_ = 0;
	uint64_t limit_ = UINT64_MAX;
};

// key=value parameters (and bare positional ones, under "").
struct kv {
	std::map<std::string, std::string> named;
	std::vector<std::string> positional;
};
kv parse_kv(const std::string& params)
{
	kv out;
	for (const std::string& p : split(params, ',')) {
		const size_t eq = p.find('=');
		if (eq == std::string::npos)
			out.positional.push_back(p);
		else
			out.named[p.substr(0, eq)] = p.substr(eq + 1);
	}
	return out;
}

// The paging parameters every list takes: cursor= (the "next" of the page
// before; its form is the list's: an id, a prefix, an address) and limit=
// (at most that many rows; default: as many as a reply holds). Anything
// else named or positional beyond `positional` is an error.
struct page {
	std::string cursor;
	uint64_t limit = UINT64_MAX;
	std::vector<std::string> positional;
};
bool page_of(const std::string& params, const char* what, size_t positional, page* out, reply& r)
{
	const kv p = parse_kv(params);
	if (p.positional.size() > positional) {
		r.error(std::string(what) + ": unexpected \"" + p.positional[positional] + "\"");
		return false;
	}
	out->positional = p.positional;
	for (const auto& [k, v] : p.named) {
		if (k == "cursor") {
			out->cursor = v == "0" ? "" : v;
		} else if (k == "limit") {
			if (!parse_u64(v, UINT64_MAX / 2, &out->limit) || out->limit == 0) {
				r.error("bad limit \"" + v + "\" (at least 1)");
				return false;
			}
		} else {
			r.error(std::string(what) + " takes cursor= and limit=, not \"" + k + "\"");
			return false;
		}
	}
	return true;
}
bool id_cursor(const page& pg, uint32_t* id, reply& r)
{
	uint64_t v = 0;
	if (!pg.cursor.empty() && !parse_u64(pg.cursor, UINT32_MAX, &v)) {
		r.error("bad cursor \"" + pg.cursor + "\" (an id)");
		return false;
	}
	*id = static_cast<uint32_t>(v);
	return true;
}

}  // namespace

size_t reply::json_size() const
{
	size_t n = 2;
	for (const auto& [k, v] : items) {
		n += k.size() + 4;
		switch (v.kind) {
		case value::u64: n += 20; break;
		case value::str: n += v.s.size() + 2; break;
		case value::list:
			n += 2;
			for (const std::string& s : v.l)
				n += s.size() + 3;
			break;
		}
	}
	return n;
}

std::string parse_prefix(const std::string& text, net::prefix* out)
{
	switch (net::parse_prefix(text, out)) {
	case net::prefix_error::none: return "";
	case net::prefix_error::malformed: return "expected a prefix like 10.0.0.0/8 or fd00::/64, got \"" + text + "\"";
	case net::prefix_error::length: return "bad prefix length in \"" + text + "\"";
	case net::prefix_error::host_bits: return "\"" + text + "\" has host bits set";
	}
	return "?";
}

const std::vector<std::pair<std::string, std::string>>& ops::commands()
{
	static const std::vector<std::pair<std::string, std::string>> c = {
		{"/ctplane/stats", "Totals, drops by reason, control path counters"},
		{"/ctplane/stats/ports", "Per-port counters. Params: cursor=PORT,limit=N. Table"},
		{"/ctplane/stats/lcores", "Per-worker counters. Params: cursor=LCORE,limit=N. Table"},
		{"/ctplane/stats/stages", "Per pipeline stage: calls, packets, TSC clocks per packet (sampled). Table"},
		{"/ctplane/stats/control", "The control loop's passes: longest and its phase, over the budget, histogram. Table"},
		{"/ctplane/ct/summary", "Conntrack sizes, counters, hash load and resizes"},
		{"/ctplane/ct/quota", "Per-source quotas: the limits, whether they are tightened, the counters, and the heaviest sources (and source, service pairs) by flows counted or by refusals. Params: n=N (1..100, default 10), by=flows|refused. Table"},
		{"/ctplane/ct/top", "Who fills the table: live flows by the prefix that opened them (/24, /48; by=src, the default), their destination prefix (by=dst), service (by=service), destination port (by=port) or state (by=state), heaviest first, as of the last GC sweep. Params: n=N (1..100, default 10), by=src|dst|service|port|state. Table"},
		{"/ctplane/ct/list", "Flows. Params: addr=,port=,state=,proto=,cursor=,limit="},
		{"/ctplane/ct/events", "CT events after a sequence number. Params: after=SEQ"},
		{"/ctplane/ct/delete", "Removes the flows that match (conntrack -D). Params: addr=,port=,state=,proto=,cursor="},
		{"/ctplane/ct/flush", "Removes every flow (conntrack -F). Params: cursor="},
		{"/ctplane/sockmap", "Short-circuited connection directions. Params: cursor=,limit=. Table"},
		{"/ctplane/nat/list", "Source NAT mappings: a flow's source and its translation. Params: addr=,port=,state=,proto=,cursor=,limit=. Table"},
		{"/ctplane/nat/stats", "Source NAT addresses: ports in use and free by protocol, flows no port could take. Table"},
		{"/ctplane/nat/exhausted", "Destinations source NAT ran out of ports towards, most refused first, with the last source refused. Params: n=N (1..100, default 10). Table"},
		{"/ctplane/services", "Services. Params: cursor=ID,limit=N. Table"},
		{"/ctplane/backends", "Backends. Params: [SERVICE],cursor=ID,limit=N. Table"},
		{"/ctplane/backend/add", "Adds a backend. Params: SERVICE,ADDR:PORT[,WEIGHT]"},
		{"/ctplane/backend/remove", "Removes a backend. Params: SERVICE,ADDR:PORT"},
		{"/ctplane/backend/set_weight", "Sets a backend's weight. Params: SERVICE,ADDR:PORT,WEIGHT"},
		{"/ctplane/backend/drain", "No new flows to a backend. Params: SERVICE,ADDR:PORT"},
		{"/ctplane/backend/activate", "New flows to a backend again. Params: SERVICE,ADDR:PORT"},
		{"/ctplane/routes", "Routes. Params: cursor=PREFIX,limit=N. Table"},
		{"/ctplane/route/add", "Adds or replaces a route. Params: PREFIX,PORT[,VIA]"},
		{"/ctplane/route/del", "Removes a route. Params: PREFIX"},
		{"/ctplane/route/replace", "Swaps the whole route table for a routes file's. Params: FILE (in the config's folder)"},
		{"/ctplane/neighbors", "Neighbours (ARP / ND). Params: cursor=ADDRESS,limit=N. Table"},
		{"/ctplane/tables", "Table sizes and resize history"},
		{"/ctplane/state/save", "Writes a state snapshot in the background. Params: [FILE] (default: state.file)"},
		{"/ctplane/state/status", "The last state save: running, file, error, what it wrote, ms"},
		{"/ctplane/state/handover", "Stops forwarding, writes the exact state to state.file, releases the ports and exits: what ctplane run --take-over asks of the running one"},
		{"/ctplane/sync/status", "CT state sync: this appliance's session, refusals (bad tag, stale, foreign), lag p50/p99, and per peer: up, sequence sent and acknowledged, lag in records and ms, resyncs, records applied. Table"},
		{"/ctplane/sync/resync", "CT state sync: every peer gets the whole table again"},
		{"/ctplane/reload", "Applies the YAML while forwarding, prepared in the background. Params: [FILE] (default: the running one's)"},
		{"/ctplane/reload/status", "The last reload or route replace: running, what, file, error, changes, ms"},
	};
	return c;
}

ops::ops(stack& dp, control_path& ctl, port_stats_fn ports) : dp_(dp), ctl_(ctl), port_stats_(std::move(ports)) {}

void ops::record(const ct::event& e)
{
	events_.emplace_back(++seq_, e);
	if (events_.size() > kEventLog)
		events_.pop_front();
}

void ops::watch_tables(uint64_t now_ns)
{
	if (t0_ns_ == 0)
		t0_ns_ = now_ns;
	const ct::stats s = dp_.ct().stats();
	const std::pair<const char*, uint64_t> now[] = {{"ct4", s.hash4.buckets}, {"ct6", s.hash6.buckets}};
	if (sizes_.empty())
		for (const auto& [n, b] : now)
			sizes_.push_back({n, b});
	for (size_t i = 0; i < sizes_.size(); i++) {
		if (sizes_[i].buckets == now[i].second)
			continue;
		resizes_.push_back({now_ns, sizes_[i].name, sizes_[i].buckets, now[i].second});
		if (resizes_.size() > kResizeLog)
			resizes_.pop_front();
		sizes_[i].buckets = now[i].second;
	}
}

std::string ops::port_name(unsigned port) const
{
	const auto& ports = dp_.cfg().ports;
	return port < ports.size() ? ports[port].name : std::to_string(port);
}

bool ops::writes(const std::string& cmd)
{
	const std::string pre = "/ctplane/";
	const std::string c = cmd.rfind(pre, 0) == 0 ? cmd.substr(pre.size()) : cmd;
	return c == "ct/delete" || c == "ct/flush" || c.rfind("backend/", 0) == 0 || c.rfind("route/", 0) == 0 ||
	       c == "reload" || c == "state/save" || c == "state/handover" || c == "sync/resync";
}

std::string reply::json(const std::string& cmd) const
{
	std::string o;
	o.reserve(json_size() + cmd.size() + 8);
	auto str = [&](const std::string& v) {
		o += '"';
		for (const char ch : v) {
			const unsigned char u = static_cast<unsigned char>(ch);
			if (ch == '"' || ch == '\\') {
				o += '\\';
				o += ch;
			} else if (u < 0x20) {
				char b[8];
				std::snprintf(b, sizeof(b), "\\u%04x", u);
				o += b;
			} else {
				o += ch;
			}
		}
		o += '"';
	};
	o += '{';
	str(cmd);
	o += ": {";
	bool first = true;
	for (const auto& [k, v] : items) {
		if (!first)
			o += ", ";
		first = false;
		str(k);
		o += ": ";
		switch (v.kind) {
		case value::u64: o += std::to_string(v.u); break;
		case value::str: str(v.s); break;
		case value::list:
			o += '[';
			for (size_t i = 0; i < v.l.size(); i++) {
				if (i != 0)
					o += ", ";
				str(v.l[i]);
			}
			o += ']';
			break;
		}
	}
	o += "}}";
	return o;
}

reply ops::run(const std::string& cmd, const std::string& params, uint64_t now_ns, bool read_only)
{
	const std::string pre = "/ctplane/";
	const std::string c = cmd.rfind(pre, 0) == 0 ? cmd.substr(pre.size()) : cmd;
	if (read_only && writes(cmd)) {
		reply r;
		r.error(cmd + " changes state: the read-only socket refuses it (use the control socket, dpdk_telemetry.v2)");
		return r;
	}
	if (writes(cmd) && c != "state/save" && busy_) {
		if (std::string why = busy_(); !why.empty()) {
			reply r;
			r.error(why);
			return r;
		}
	}
	if (c == "reload/status") {
		if (reload_status_)
			return reload_status_();
		reply r;
		r.error("no reloads here (the running ctplane has its config file)");
		return r;
	}
	if (c == "stats")
		return stats();
	if (c == "stats/ports")
		return stats_ports(params);
	if (c == "stats/lcores")
		return stats_lcores(params);
	if (c == "stats/stages")
		return stats_stages();
	if (c == "stats/control")
		return stats_control();
	if (c == "ct/summary")
		return ct_summary();
	if (c == "ct/top")
		return ct_top(params);
	if (c == "ct/quota")
		return ct_quota(params);
	if (c == "ct/list")
		return ct_list(params, now_ns);
	if (c == "ct/events")
		return ct_events(params);
	if (c == "ct/delete" || c == "ct/flush")
		return ct_delete(params, now_ns, c == "ct/flush");
	if (c == "sockmap")
		return sockmap_list(params);
	if (c == "nat/list")
		return nat_list(params, now_ns);
	if (c == "nat/stats")
		return nat_stats();
	if (c == "nat/exhausted")
		return nat_exhausted(params);
	if (c == "services")
		return services(params);
	if (c == "backends")
		return backends(params);
	if (c.rfind("backend/", 0) == 0)
		return backend_cmd(c.substr(8), params);
	if (c == "routes")
		return routes(params);
	if (c.rfind("route/", 0) == 0)
		return route_cmd(c.substr(6), params);
	if (c == "neighbors")
		return neighbors(params, now_ns);
	if (c == "tables")
		return tables();
	if (c == "reload") {
		reply r;
		std::string file;
		if (!reload_)
			r.error("no reload here (the running ctplane has its config file)");
		else if (std::string e = params.empty() ? "" : config::confine_path(config_dir_, params, &file); !e.empty())
			r.error("reload: " + e);
		else
			return reload_(file);
		return r;
	}
	if (c == "state/handover") {
		if (handover_)
			return handover_();
		reply r;
		r.error("no handover here (the running ctplane hands over)");
		return r;
	}
	if (c == "sync/status")
		return sync_status(now_ns);
	if (c == "sync/resync") {
		reply r;
		if (dp_.sync() == nullptr) {
			r.error("sync is off (the config has no sync: section)");
			return r;
		}
		dp_.sync()->resync();
		r.text("resync", "started for every peer");
		return r;
	}
	if (c == "state/status") {
		if (state_status_)
			return state_status_();
		reply r;
		r.error("no snapshots here (the running ctplane writes them)");
		return r;
	}
	if (c == "state/save") {
		reply r;
		std::string file = dp_.cfg().state.file;
		if (!state_save_)
			r.error("no snapshots here (the running ctplane writes them)");
		else if (std::string e = params.empty() ? "" : config::confine_path(state_dir_, params, &file); !e.empty())
			r.error("state save: " + e + " (state.dir)");
		else if (file.empty())
			r.error("no file given and no state.file in the config");
		else
			return state_save_(file, now_ns);
		return r;
	}
	reply r;
	r.error("unknown command " + cmd);
	return r;
}

reply ops::stats_control()
{
	reply r;
	if (passes_ == nullptr) {
		r.error("no control loop here (the running ctplane times its passes)");
		return r;
	}
	const pass_stats& p = *passes_;
	r.num("passes", p.passes());
	r.num("budget_us", p.budget_ns() / 1000);
	r.num("over_budget", p.over_budget());
	r.num("longest_us", p.longest_ns() / 1000);
	r.text("longest_phase", p.longest_phase());
	r.num("last_us", p.last_ns() / 1000);
	r.num("sum_us", p.sum_ns() / 1000);
	table_out t(r, {"le_us", "passes"});
	for (unsigned i = 0; i <= pass_stats::kBuckets; i++)
		t.add({i < pass_stats::kBuckets ? std::to_string(pass_stats::bucket_le_ns(i) / 1000) : "inf",
		       std::to_string(p.histogram()[i])});
	t.finish(0);
	return r;
}

reply ops::stats()
{
	reply r;
	const pipeline_stats s = dp_.pl().stats();
#define CTPLANE_X(n) r.num(#n, s.n);
	CTPLANE_LCORE_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	for (unsigned d = 0; d < kDropReasons; d++)
		r.num(std::string("drop/") + drop_name(static_cast<drop>(d)), s.drops[d]);
	const control_stats& cs = ctl_.stats();
#define CTPLANE_X(n) r.num("control/" #n, cs.n);
	CTPLANE_CONTROL_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	r.num("neighbors/rehashes", dp_.pl().neighbor_rehashes());
	r.num("neighbors/refused", dp_.pl().neighbor_refused());
	r.num("ct/flows", dp_.ct().size());
	r.num("sockmap/entries", dp_.sm().get_stats().entries);
	const maps::table_memory_stats m = maps::table_memory();
	r.num("memory/hugetlb_bytes", m.hugetlb_bytes);
	r.num("memory/thp_bytes", m.thp_bytes);
	r.num("memory/hugetlb_refusals", m.hugetlb_refusals);
	return r;
}

reply ops::stats_ports(const std::string& params)
{
	reply r;
	page pg;
	uint32_t from = 0;
	if (!page_of(params, "stats/ports", 0, &pg, r) || !id_cursor(pg, &from, r))
		return r;
	table_out t(r, {"port", "name", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_missed", "rx_errors",
			"tx_errors", "rx_nombuf", "punt_dropped"});
	t.set_limit(pg.limit);
	const unsigned n = dp_.pl().nports();
	uint64_t next = 0;
	for (unsigned p = from; p < n && next == 0; p++) {
		port_counters pc;
		if (port_stats_ == nullptr || !port_stats_(p, &pc))
			continue;
		if (!t.add({std::to_string(p), port_name(p), std::to_string(pc.rx_packets), std::to_string(pc.tx_packets),
			    std::to_string(pc.rx_bytes), std::to_string(pc.tx_bytes), std::to_string(pc.rx_missed),
			    std::to_string(pc.rx_errors), std::to_string(pc.tx_errors), std::to_string(pc.rx_nombuf),
			    std::to_string(pc.punt_dropped)}))
			next = p;
	}
	t.finish(next);
	return r;
}

reply ops::stats_lcores(const std::string& params)
{
	reply r;
	page pg;
	uint32_t from = 0;
	if (!page_of(params, "stats/lcores", 0, &pg, r) || !id_cursor(pg, &from, r))
		return r;
	std::vector<std::string> f = {"lcore"};
#define CTPLANE_X(n) f.push_back(#n);
	CTPLANE_LCORE_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	table_out t(r, f);
	t.set_limit(pg.limit);
	const unsigned n = dp_.cfg().workers;
	uint64_t next = 0;
	for (unsigned l = from; l < n && next == 0; l++) {
		const lcore_stats& s = dp_.pl().lcore(l);
		std::vector<std::string> row = {std::to_string(l)};
#define CTPLANE_X(n) row.push_back(std::to_string(s.n.get()));
		CTPLANE_LCORE_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
		if (!t.add(row))
			next = l;
	}
	t.finish(next);
	return r;
}

reply ops::stats_stages()
{
	reply r;
	table_out t(r, {"stage", "calls", "packets", "packets_per_call", "clocks_per_packet", "sampled_packets"});
	const pipeline_stats p = dp_.pl().stats();
	for (unsigned k = 0; k < kStages; k++) {
		const auto& st = p.stages[k];
		char ppc[32], cpp[32];
		std::snprintf(ppc, sizeof(ppc), "%.1f", st.calls != 0 ? double(st.vectors) / double(st.calls) : 0.0);
		std::snprintf(cpp, sizeof(cpp), "%.1f",
			      st.sampled_vectors != 0 ? double(st.clocks) / double(st.sampled_vectors) : 0.0);
		t.add({stage_name(static_cast<stage>(k)), std::to_string(st.calls), std::to_string(st.vectors), ppc, cpp,
		       std::to_string(st.sampled_vectors)});
	}
	t.finish(0);
	return r;
}

namespace {
// The parameters of a "top" page: n=N (1..100) and by=<one of `kinds`>.
// false (and the error in r) if anything else is there.
bool top_params(const std::string& params, const char* page, const std::vector<const char*>& kinds, uint64_t* n,
		unsigned* by, reply& r)
{
	const kv p = parse_kv(params);
	std::string usage = std::string(page) + " takes n=N and by=";
	for (size_t i = 0; i < kinds.size(); i++)
		usage += (i ? "|" : "") + std::string(kinds[i]);
	if (!p.positional.empty()) {
		r.error(usage);
		return false;
	}
	for (const auto& [k, v] : p.named) {
		if (k == "n") {
			if (!parse_u64(v, 100, n) || *n == 0) {
				r.error("n must be within 1..100, not \"" + v + "\"");
				return false;
			}
		} else if (k == "by") {
			unsigned i = 0;
			while (i < kinds.size() && v != kinds[i])
				i++;
			if (i == kinds.size()) {
				r.error(usage + ", not by=" + v);
				return false;
			}
			*by = i;
		} else {
			r.error(usage + ", not " + k);
			return false;
		}
	}
	return true;
}
}  // namespace

reply ops::ct_top(const std::string& params)
{
	reply r;
	static const std::vector<const char*> kBy = {"src", "dst", "service", "port", "state"};
	uint64_t n = 10;
	unsigned byi = 0;
	if (!top_params(params, "ct top", kBy, &n, &byi, r))
		return r;
	const auto by = static_cast<ct::census_by>(byi);
	ct::table::census_info info;
	const std::vector<ct::census_row> rows = dp_.ct().top_openers(n, &info, by);
	r.num("flows", info.flows);
	r.num("others", info.others);
	r.num("sweeps", info.sweeps);
	const char* col = by == ct::census_by::src || by == ct::census_by::dst ? "prefix" : kBy[static_cast<unsigned>(by)];
	table_out t(r, {col, "flows", "share_pct"});
	auto proto = [](uint8_t pr) {
		return std::string(pr == ct::kProtoTCP ? "tcp" : pr == ct::kProtoUDP ? "udp" : pr == ct::kProtoICMP ? "icmp"
				 : pr == ct::kProtoICMPv6 ? "icmpv6" : std::to_string(pr));
	};
	for (const ct::census_row& row : rows) {
		std::string key;
		switch (by) {
		case ct::census_by::src:
		case ct::census_by::dst: {
			net::prefix pf;
			pf.family = row.family;
			std::memcpy(pf.addr, row.prefix, 16);
			pf.len = row.len;
			key = net::to_string(pf);
			break;
		}
		case ct::census_by::service: {
			net::address a;
			a.family = row.family;
			std::memcpy(a.addr, row.prefix, 16);
			key = proto(row.proto) + " " + net::endpoint_string(a, row.port);
			break;
		}
		case ct::census_by::port: key = proto(row.proto) + "/" + std::to_string(row.port); break;
		default: key = ct::state_name(row.state); break;
		}
		char share[32];
		std::snprintf(share, sizeof(share), "%.1f", info.flows != 0 ? 100.0 * double(row.flows) / double(info.flows) : 0.0);
		if (!t.add({key, std::to_string(row.flows), share}))
			break;
	}
	t.finish(0);
	return r;
}

reply ops::ct_quota(const std::string& params)
{
	reply r;
	uint64_t n = 10;
	unsigned byi = 0;
	if (!top_params(params, "ct quota", {"flows", "refused"}, &n, &byi, r))
		return r;
	const bool by_refused = byi == 1;
	const ct::quota& q = dp_.ct().quotas();
	const ct::quota_config& c = q.cfg();
	const ct::quota_stats st = q.stats();
	r.num("flows_per_source", c.flows_per_source);
	r.num("source_prefix_v4", c.prefix_v4);
	r.num("source_prefix_v6", c.prefix_v6);
	r.num("tighten_pct", c.tighten_pct);
	r.num("tighten_factor", c.tighten_factor);
	r.num("tight", st.tight ? 1 : 0);
	r.num("counters", st.counters);
	r.num("capacity", st.capacity);
	r.num("evicted", st.evicted);
	r.num("refused", st.refused);
	r.num("epoch", st.epoch);
	table_out t(r, {"source", "service", "flows", "refused"});
	for (const ct::quota_row& row : q.top(n, by_refused)) {
		net::prefix pf;
		pf.family = row.family;
		std::memcpy(pf.addr, row.prefix, 16);
		pf.len = row.len;
		std::string svc = "-";
		if (row.service) {
			net::address a;
			a.family = row.family;
			std::memcpy(a.addr, row.svc_addr, 16);
			svc = std::string(row.svc_proto == ct::kProtoUDP ? "udp " : "tcp ") + net::endpoint_string(a, row.svc_port);
		}
		if (!t.add({net::to_string(pf), svc, std::to_string(row.flows), std::to_string(row.refused)}))
			break;
	}
	t.finish(0);
	return r;
}

reply ops::ct_summary()
{
	reply r;
	ct::table& ct = dp_.ct();
	const ct::stats s = ct.stats();
	r.num("flows", ct.size());
	r.num("flows4", s.flows4);
	r.num("flows6", s.flows6);
	r.num("overflow4", s.overflow4);
	r.num("overflow6", s.overflow6);
	r.num("max_entries", ct.cfg().max_entries);
	r.num("bytes", s.bytes);
#define CTPLANE_X(n) r.num(#n, s.c.n);
	CTPLANE_CT_COUNTERS(CTPLANE_X)
#undef CTPLANE_X
	const std::pair<const char*, const maps::rhash_stats*> h[] = {{"hash4", &s.hash4}, {"hash6", &s.hash6}};
	for (const auto& [n, x] : h) {
		const std::string p = n;
		r.num(p + "/buckets", x->buckets);
		r.num(p + "/load_pct", static_cast<uint64_t>(x->load * 100 + 0.5));
		r.num(p + "/resizing", x->resizing);
		r.num(p + "/grows", x->grows);
		r.num(p + "/shrinks", x->shrinks);
		r.num(p + "/busy_resize", x->err_busy_resize);
		r.num(p + "/busy_chain", x->err_busy_chain);
		r.num(p + "/reseeds", x->reseeds);
	}
	r.num("gc_sweeps", s.gc_sweeps);
	r.num("events_lost", s.events_lost);
	return r;
}

namespace {

// The flows a ct list or delete names: key=value filters (addr, port,
// state, proto; any of the flow's addresses / ports, the translation's
// included) and the paging ones.
struct ct_filter {
	lb::address addr{};
	uint64_t port = 0, cursor = 0, limit = UINT64_MAX;
	int state = -1, proto = -1;
	bool any = false;  // a flow filter was given (not just paging)

	// "" or what is wrong.
	std::string parse(const std::string& what, const std::string& params)
	{
		const kv p = parse_kv(params);
		if (!p.positional.empty())
			return what + " takes key=value filters (addr, port, state, proto, cursor, limit), got \"" +
			       p.positional[0] + "\"";
		for (const auto& [k, v] : p.named) {
			any = any || (k != "cursor" && k != "limit");
			if (k == "addr") {
				if (!lb::parse_address(v, &addr))
					return "bad address \"" + v + "\"";
			} else if (k == "port") {
				if (!parse_u64(v, 65535, &port))
					return "bad port \"" + v + "\"";
			} else if (k == "state") {
				for (int s = 1; s < ct::kStates; s++)
					if (strcasecmp(v.c_str(), ct::state_name(static_cast<uint8_t>(s))) == 0)
						state = s;
				if (state < 0)
					return "unknown state \"" + v + "\" (ESTABLISHED, SYN_SENT, TIME_WAIT, ...)";
			} else if (k == "proto") {
				for (int x : {ct::kProtoTCP, ct::kProtoUDP, ct::kProtoICMP, ct::kProtoICMPv6})
					if (v == proto_name(static_cast<uint8_t>(x)))
						proto = x;
				if (proto < 0)
					return "unknown protocol \"" + v + "\" (tcp, udp, icmp, icmpv6)";
			} else if (k == "cursor" || k == "limit") {
				uint64_t n;
				if (!parse_u64(v, UINT64_MAX / 2, &n))
					return "bad " + k + " \"" + v + "\"";
				if (k == "limit" && n == 0)
					return "limit must be at least 1";
				(k == "cursor" ? cursor : limit) = n;
			} else {
				return "unknown filter \"" + k + "\" (addr, port, state, proto, cursor, limit)";
			}
		}
		return "";
	}
	bool matches(const ct::flow_view& f) const noexcept
	{
		const ct::tuple& o = f.orig;
		const unsigned alen = addr.family == 4 ? 4 : 16;
		if (addr.family != 0 &&
		    !(o.family == addr.family && (std::memcmp(o.src, addr.addr, alen) == 0 ||
						  std::memcmp(o.dst, addr.addr, alen) == 0 ||
						  (f.dnat && std::memcmp(f.nat_addr, addr.addr, alen) == 0) ||
						  (f.snat && std::memcmp(f.snat_addr, addr.addr, alen) == 0))))
			return false;
		if (port != 0 && o.sport != port && o.dport != port && !(f.dnat && f.nat_port == port) &&
		    !(f.snat && f.snat_port == port))
			return false;
		return !((state >= 0 && f.state != state) || (proto >= 0 && o.proto != proto));
	}
};

}  // namespace

reply ops::ct_list(const std::string& params, uint64_t now_ns)
{
	reply r;
	ct_filter flt;
	if (std::string e = flt.parse("ct list", params); !e.empty()) {
		r.error(e);
		return r;
	}
	table_out t(r, {"proto", "state", "src", "sport", "dst", "dport", "nat", "packets", "bytes", "expires_s"});
	const uint32_t now = ct::table::ticks(now_ns);
	// A page ends where the reply is full (or at `limit`); "next" is the
	// cursor to continue from, 0 once the table is done. Each page costs
	// its own flows (plus those the filters pass over), not the table.
	uint64_t rows = 0, visited = 0;
	const uint64_t next = dp_.ct().walk(flt.cursor, [&](const ct::flow_view& f) {
		// Bounded whether or not anything matches: a filter that matches
		// nothing costs one budget per call, and "next" goes on.
		if (++visited > kWalkBudget)
			return false;
		if (!flt.matches(f))
			return true;
		if (rows == flt.limit)
			return false;
		const ct::tuple& o = f.orig;
		// The translations: "backend" (DNAT), "src>address:port" (source
		// NAT), both for a FullNAT service.
		std::string nat;
		if (f.dnat)
			nat = net::endpoint_string(f.nat_addr, o.family, f.nat_port);
		if (f.snat)
			nat += (nat.empty() ? "" : " ") + std::string("src>") +
			       net::endpoint_string(f.snat_addr, o.family, f.snat_port);
		if (nat.empty())
			nat = "-";
		const int32_t left = static_cast<int32_t>(f.expires_ms - now);
		if (!t.add({proto_str(o.proto), ct::state_name(f.state), addr_str(o.src, o.family), std::to_string(o.sport),
			    addr_str(o.dst, o.family), std::to_string(o.dport), nat,
			    std::to_string(f.packets[0]) + "/" + std::to_string(f.packets[1]),
			    std::to_string(f.bytes[0]) + "/" + std::to_string(f.bytes[1]),
			    std::to_string(left > 0 ? left / 1000 : 0)}))
			return false;
		rows++;
		return true;
	});
	t.finish(next == ct::table::kWalkEnd ? 0 : next);
	return r;
}

// conntrack -D / -F: the matching flows leave through ct::table::erase, the
// path every removal takes (a destroy event, the sockmap entry with it,
// the erased counter). At most kDeleteBatch flows erased and kWalkBudget
// visited a call, so a reply never waits on the whole table; "next" says
// where the next call goes on.
reply ops::ct_delete(const std::string& params, uint64_t now_ns, bool flush)
{
	reply r;
	ct_filter flt;
	const std::string what = flush ? "ct flush" : "ct delete";
	if (std::string e = flt.parse(what, params); !e.empty()) {
		r.error(e);
		return r;
	}
	if (flush && flt.any) {
		r.error("ct flush takes no filters (ct delete does)");
		return r;
	}
	if (!flush && !flt.any) {
		r.error("ct delete needs a filter (addr, port, state, proto); ct flush removes every flow");
		return r;
	}
	constexpr uint64_t kDeleteBatch = 65536;
	const uint64_t batch = std::min(flt.limit, kDeleteBatch);
	std::vector<ct::tuple> doomed;
	uint64_t visited = 0;
	const uint64_t next = dp_.ct().walk(flt.cursor, [&](const ct::flow_view& f) {
		if (++visited > kWalkBudget)
			return false;
		if (!flt.matches(f))
			return true;
		if (doomed.size() == batch)
			return false;
		doomed.push_back(f.orig);
		return true;
	});
	uint64_t deleted = 0;
	for (const ct::tuple& t : doomed)
		deleted += dp_.ct().erase(t, now_ns) == 0;
	dp_.drain_events();  // the sockmap and the event log see them now
	r.num("deleted", deleted);
	r.num("next", next == ct::table::kWalkEnd ? 0 : next);
	return r;
}

reply ops::sockmap_list(const std::string& params)
{
	reply r;
	page pg;
	if (!page_of(params, "sockmap", 0, &pg, r))
		return r;
	uint64_t cursor = 0;
	if (!pg.cursor.empty() && !parse_u64(pg.cursor, UINT64_MAX - 1, &cursor)) {
		r.error("bad cursor \"" + pg.cursor + "\"");
		return r;
	}
	// hits: this direction's packets on the short path since its insert
	// (the connection's packets and bytes, folded in, are `ct list`'s).
	table_out t(r, {"proto", "src", "sport", "dst", "dport", "port", "hits"});
	t.set_limit(pg.limit);
	const uint64_t next = dp_.sm().walk(cursor, [&](const ct::tuple& d, const sockmap::entry& e) {
		return t.add({proto_str(d.proto), addr_str(d.src, d.family), std::to_string(d.sport), addr_str(d.dst, d.family),
			      std::to_string(d.dport), port_name(e.r.port), std::to_string(e.packets)});
	});
	t.finish(next == sockmap::sockmap::kWalkEnd ? 0 : next);
	return r;
}

// Source NAT mappings: the flows the CT translates the source of, paged
// as ct list (the same filters, on the flow's original tuple).
reply ops::nat_list(const std::string& params, uint64_t now_ns)
{
	reply r;
	ct_filter flt;
	if (std::string e = flt.parse("nat list", params); !e.empty()) {
		r.error(e);
		return r;
	}
	table_out t(r, {"proto", "state", "src", "sport", "nat_addr", "nat_port", "dst", "dport", "backend", "expires_s"});
	const uint32_t now = ct::table::ticks(now_ns);
	uint64_t rows = 0, visited = 0;
	const uint64_t next = dp_.ct().walk(flt.cursor, [&](const ct::flow_view& f) {
		if (++visited > kWalkBudget)
			return false;  // bounded per call, as ct list
		if (!f.snat || !flt.matches(f))
			return true;
		if (rows == flt.limit)
			return false;
		const ct::tuple& o = f.orig;
		const int32_t left = static_cast<int32_t>(f.expires_ms - now);
		if (!t.add({proto_str(o.proto), ct::state_name(f.state), addr_str(o.src, o.family), std::to_string(o.sport),
			    addr_str(f.snat_addr, o.family), std::to_string(f.snat_port), addr_str(o.dst, o.family),
			    std::to_string(o.dport), f.dnat ? net::endpoint_string(f.nat_addr, o.family, f.nat_port) : "-",
			    std::to_string(left > 0 ? left / 1000 : 0)}))
			return false;
		rows++;
		return true;
	});
	t.finish(next == ct::table::kWalkEnd ? 0 : next);
	return r;
}

reply ops::nat_stats()
{
	reply r;
	const ct::snat_pools& pools = dp_.ct().snat();
	const std::vector<const ct::snat_address*> addrs = pools.addresses();
	const dataplane::snat_rules* rules = dp_.pl().snat();
	r.num("rules", rules != nullptr ? rules->rules.size() : 0);
	r.num("addresses", addrs.size());
	r.num("refused", dp_.ct().stats().c.refused_snat);
	const dataplane::pipeline_stats ps = dp_.pl().stats();
	r.num("no_mapping", ps.drops[static_cast<unsigned>(dataplane::drop::snat_no_mapping)]);
	r.num("hairpin", ps.drops[static_cast<unsigned>(dataplane::drop::snat_hairpin)]);
	table_out t(r, {"address", "proto", "ports", "in_use", "free", "exhausted"});
	for (const ct::snat_address* a : addrs)  // at most snat_pools::kMaxAddresses
		for (unsigned c = 0; c < ct::kSnatClasses; c++) {
			const ct::port_pool& p = *a->pools[c];
			t.add({addr_str(a->addr, a->family), ct::snat_class_name(static_cast<ct::snat_class>(c)),
			       std::to_string(a->lo) + "-" + std::to_string(a->hi), std::to_string(p.in_use()),
			       std::to_string(p.size() - p.in_use()),
			       std::to_string(a->exhausted[c].load(std::memory_order_relaxed))});
		}
	t.finish(0);
	return r;
}

reply ops::nat_exhausted(const std::string& params)
{
	reply r;
	uint64_t n = 10;
	unsigned byi = 0;
	if (!top_params(params, "nat exhausted", {"refused"}, &n, &byi, r))
		return r;
	table_out t(r, {"destination", "proto", "refused", "last_source"});
	for (const ct::snat_destination& d : dp_.ct().snat().destinations()) {
		if (t.rows() == n)
			break;
		const ct::tuple& l = d.last;
		const bool ports = l.proto == ct::kProtoTCP || l.proto == ct::kProtoUDP;
		lb::endpoint dst{}, src{};
		std::memcpy(dst.addr, l.dst, 16);
		std::memcpy(src.addr, l.src, 16);
		dst.family = src.family = l.family;
		dst.port = ports ? l.dport : 0;
		src.port = ports ? l.sport : 0;
		t.add({ports ? endpoint_str(dst) : addr_str(l.dst, l.family), proto_str(l.proto), std::to_string(d.refused),
		       ports ? endpoint_str(src) : addr_str(l.src, l.family)});
	}
	t.finish(0);
	return r;
}

reply ops::ct_events(const std::string& params)
{
	if (!event_log_) {
		reply r;
		r.error("CT events are off (ct.events: false in the config; it takes a restart)");
		return r;
	}
	// Without after=: no events, only where the log is ("last"), for a
	// client that follows from now on. after=0: everything still kept.
	reply r;
	const kv p = parse_kv(params);
	uint64_t after = seq_;
	const auto it = p.named.find("after");
	if (!p.positional.empty() || p.named.size() > (it != p.named.end() ? 1u : 0u)) {
		r.error("ct events takes after=SEQ");
		return r;
	}
	if (it != p.named.end() && !parse_u64(it->second, UINT64_MAX, &after)) {
		r.error("bad sequence number \"" + it->second + "\"");
		return r;
	}
	const uint64_t oldest = events_.empty() ? seq_ + 1 : events_.front().first;
	r.num("missed", after + 1 < oldest ? oldest - after - 1 : 0);
	table_out t(r, {"seq", "time_ms", "event", "proto", "src", "sport", "dst", "dport", "state", "reason"});
	uint64_t last = std::max(after, oldest - 1);
	for (const auto& [seq, e] : events_) {
		if (seq <= after)
			continue;
		const ct::tuple& o = e.orig;
		if (!t.add({std::to_string(seq), std::to_string(e.time_ms), event_name(e.type),
			    proto_str(o.proto), addr_str(o.src, o.family), std::to_string(o.sport), addr_str(o.dst, o.family),
			    std::to_string(o.dport), ct::state_name(e.state), reason_name(e.reason)}))
			break;
		last = seq;
	}
	r.num("last", std::min(last, seq_));
	t.finish(0);
	return r;
}

reply ops::services(const std::string& params)
{
	reply r;
	page pg;
	uint32_t from = 0;
	if (!page_of(params, "services", 0, &pg, r) || !id_cursor(pg, &from, r))
		return r;
	table_out t(r, {"id", "name", "frontend", "proto", "backends", "active", "maglev"});
	t.set_limit(pg.limit);
	lb::balancer& lb = dp_.lb();
	// A page costs its rows: services from the cursor, each counting its
	// own backends.
	uint32_t next = 0;
	lb.for_each_service_from(from, [&](uint32_t id, const lb::service& s) {
		const auto [all, active] = lb.backend_counts(id);
		if (!t.add({std::to_string(id), lb.service_name(id), endpoint_str(s.frontend), proto_str(s.frontend.proto),
			    std::to_string(all), std::to_string(active), std::to_string(s.maglev_size)})) {
			next = id;
			return false;
		}
		return true;
	});
	t.finish(next);
	return r;
}

reply ops::backends(const std::string& params)
{
	reply r;
	page pg;
	uint32_t from = 0;
	if (!page_of(params, "backends", 1, &pg, r) || !id_cursor(pg, &from, r))
		return r;
	lb::balancer& lb = dp_.lb();
	uint32_t only = 0;
	if (!pg.positional.empty() && (only = lb.service_id(pg.positional[0])) == 0) {
		r.error("unknown service \"" + pg.positional[0] + "\"");
		return r;
	}
	const pipeline_stats ps = dp_.pl().stats();
	table_out t(r, {"id", "service", "address", "weight", "state", "new_flows"});
	t.set_limit(pg.limit);
	uint32_t next = 0;
	lb.for_each_backend_from(from, [&](uint32_t id, const lb::backend& b) {
		if (only != 0 && b.service != only)
			return true;
		if (t.add({std::to_string(id), lb.service_name(b.service), endpoint_str(b.ep), std::to_string(b.weight),
			   lb::state_name(static_cast<lb::backend_state>(b.state)),
			   std::to_string(id < ps.backend_flows.size() ? ps.backend_flows[id] : 0)}))
			return true;
		next = id;
		return false;
	});
	t.finish(next);
	return r;
}

reply ops::backend_cmd(const std::string& verb, const std::string& params)
{
	reply r;
	lb::balancer& lb = dp_.lb();
	const std::vector<std::string> a = split(params, ',');
	const bool takes_weight = verb == "set_weight" || verb == "add";
	if ((verb != "add" && verb != "remove" && verb != "set_weight" && verb != "drain" && verb != "activate")) {
		r.error("unknown backend command \"" + verb + "\" (add, remove, set_weight, drain, activate)");
		return r;
	}
	if (a.size() < 2 || a.size() > (takes_weight ? 3u : 2u) || (verb == "set_weight" && a.size() != 3)) {
		r.error("usage: backend " + verb + " SERVICE ADDR:PORT" + (takes_weight ? " WEIGHT" : ""));
		return r;
	}
	const uint32_t svc = lb.service_id(a[0]);
	if (svc == 0) {
		r.error("unknown service \"" + a[0] + "\"");
		return r;
	}
	lb::address addr;
	uint16_t port;
	if (!net::parse_endpoint(a[1], &addr, &port)) {
		r.error("bad backend address \"" + a[1] + "\" (expected ADDR:PORT, [v6]:PORT)");
		return r;
	}
	uint64_t weight = 1;
	if (a.size() == 3 && !parse_u64(a[2], lb::kMaxWeight, &weight)) {
		r.error("bad weight \"" + a[2] + "\" (0.." + std::to_string(lb::kMaxWeight) + ")");
		return r;
	}
	std::string err;
	uint32_t id = lb.backend_id(a[0], addr, port);
	if (verb == "add") {
		lb::backend_spec b;
		b.service = a[0];
		b.addr = addr;
		b.port = port;
		b.weight = static_cast<uint32_t>(weight);
		err = lb.add_backend(b, &id);
	} else if (id == 0) {
		err = "service \"" + a[0] + "\" has no backend " + a[1];
	} else if (verb == "remove") {
		err = lb.remove_backend(id);
	} else if (verb == "set_weight") {
		err = lb.set_weight(id, static_cast<uint32_t>(weight));
	} else {
		err = lb.set_state(id, verb == "drain" ? lb::backend_state::draining : lb::backend_state::active);
	}
	if (!err.empty()) {
		r.error(err);
		return r;
	}
	lb.commit();
	r.text("ok", verb + " " + a[0] + " " + a[1]);
	r.num("backend", id);
	return r;
}

reply ops::routes(const std::string& params)
{
	reply r;
	page pg;
	if (!page_of(params, "routes", 0, &pg, r))
		return r;
	net::prefix from{};
	if (!pg.cursor.empty() && net::parse_prefix(pg.cursor, &from) != net::prefix_error::none) {
		r.error("bad cursor \"" + pg.cursor + "\" (a prefix)");
		return r;
	}
	table_out t(r, {"prefix", "port", "via"});
	t.set_limit(pg.limit);
	std::string next;
	dp_.pl().for_each_route_from(pg.cursor.empty() ? nullptr : &from, [&](const config::route_spec& rt) {
		if (t.add({to_string(rt.prefix), port_name(rt.port), rt.has_via ? lb::to_string(rt.via) : "-"}))
			return true;
		next = to_string(rt.prefix);
		return false;
	});
	t.finish(next);
	return r;
}

reply ops::route_cmd(const std::string& verb, const std::string& params)
{
	reply r;
	const std::vector<std::string> a = split(params, ',');
	if (verb == "replace")
		return route_replace(params);
	if (verb != "add" && verb != "del") {
		r.error("unknown route command \"" + verb + "\" (add, del, replace)");
		return r;
	}
	if (a.empty() || (verb == "add" && (a.size() < 2 || a.size() > 3)) || (verb == "del" && a.size() != 1)) {
		r.error(verb == "add" ? "usage: route add PREFIX PORT [VIA]" : "usage: route del PREFIX");
		return r;
	}
	config::route_spec rt;
	if (std::string e = parse_prefix(a[0], &rt.prefix); !e.empty()) {
		r.error(e);
		return r;
	}
	std::string err;
	if (verb == "del") {
		err = dp_.pl().del_route(rt.prefix);
	} else {
		const auto& ports = dp_.cfg().ports;
		size_t pi = 0;
		while (pi < ports.size() && ports[pi].name != a[1])
			pi++;
		if (pi == ports.size()) {
			r.error("unknown port \"" + a[1] + "\"");
			return r;
		}
		rt.port = static_cast<uint32_t>(pi);
		if (a.size() == 3) {
			if (!lb::parse_address(a[2], &rt.via)) {
				r.error("bad next hop address \"" + a[2] + "\"");
				return r;
			}
			rt.has_via = true;
		}
		err = dp_.pl().add_route(rt);
	}
	if (!err.empty()) {
		r.error(err);
		return r;
	}
	r.text("ok", "route " + verb + " " + a[0]);
	return r;
}

reply ops::route_replace(const std::string& params)
{
	reply r;
	std::string file;
	if (params.empty()) {
		r.error("usage: route replace FILE (a routes file in the config's folder)");
		return r;
	}
	if (std::string e = config::confine_path(config_dir_, params, &file); !e.empty()) {
		r.error("route replace: " + e);
		return r;
	}
	if (route_replace_)
		return route_replace_(file);  // the runtime's: off the control thread
	// Streamed and checked whole, then built aside: a bad line or a table
	// that cannot be built changes nothing.
	std::vector<config::route_spec> routes;
	config::result<size_t> n = config::read_route_file(file, dp_.cfg().ports, &routes, "route replace");
	if (!n) {
		r.error(n.err().str());
		return r;
	}
	fib::route_plan plan;
	if (std::string e = dp_.pl().plan_routes(routes, &plan); !e.empty()) {
		r.error("route replace: " + e + "; the table is unchanged");
		return r;
	}
	dp_.pl().commit_routes(std::move(plan));
	r.text("file", file);
	r.num("routes", routes.size());
	r.num("next_hops", dp_.pl().fib().hop_count());
	return r;
}

reply ops::neighbors(const std::string& params, uint64_t now_ns)
{
	reply r;
	page pg;
	if (!page_of(params, "neighbors", 0, &pg, r))
		return r;
	lb::address from{};
	if (!pg.cursor.empty() && !lb::parse_address(pg.cursor, &from)) {
		r.error("bad cursor \"" + pg.cursor + "\" (an address)");
		return r;
	}
	table_out t(r, {"address", "mac", "port", "state", "probes", "queued", "age_s"});
	t.set_limit(pg.limit);
	std::string next;
	ctl_.for_each_neighbor_from(pg.cursor.empty() ? nullptr : &from, [&](const neighbor_info& n) {
		const bool known = n.state != nb_state::incomplete && n.state != nb_state::failed;
		if (t.add({lb::to_string(n.addr), known ? mac_str(n.mac) : "-", port_name(n.port), nb_state_name(n.state),
			   std::to_string(n.probes), std::to_string(n.queued),
			   n.state == nb_state::permanent ? "-" : std::to_string((now_ns - n.updated_ns) / 1'000'000'000)}))
			return true;
		next = lb::to_string(n.addr);
		return false;
	});
	t.finish(next);
	return r;
}

reply ops::sync_status(uint64_t now_ns)
{
	(void)now_ns;
	reply r;
	const sync::service* sv = dp_.sync();
	if (sv == nullptr) {
		r.error("sync is off (the config has no sync: section)");
		return r;
	}
	const sync::status s = sv->snapshot();
	char epoch[24];
	std::snprintf(epoch, sizeof(epoch), "%016" PRIx64, s.epoch);
	r.text("listen", sv->listen_name());
	r.text("epoch", epoch);
	r.num("changes", s.changes);
	r.num("queue_dropped", s.queue_dropped);
	r.num("bad_mac", s.bad_mac);
	r.num("stale", s.stale);
	r.num("malformed", s.malformed);
	r.num("foreign", s.foreign);
	r.num("busy_retries", s.busy_retries);
	r.num("lag_p50_us", s.lag_p50_us);
	r.num("lag_p99_us", s.lag_p99_us);
	r.row("fields", {"peer", "up", "sent", "acked", "unacked", "lag_records", "lag_ms", "resyncs_sent",
			 "resyncs_received", "resyncing", "sessions", "records_sent", "resends", "records_applied",
			 "records_updated", "records_destroyed", "records_refused", "duplicates", "layout_refused",
			 "last_heard_ms"});
	const std::vector<std::string> names = sv->peer_names();
	for (size_t i = 0; i < s.peers.size(); i++) {
		const sync::peer_status& p = s.peers[i];
		auto n = [](uint64_t v) { return std::to_string(v); };
		r.row(std::to_string(i),
		      {i < names.size() ? names[i] : "?", p.up ? "1" : "0", n(p.sent), n(p.acked), n(p.unacked),
		       n(p.lag_records), n(p.lag_ms), n(p.resyncs_sent), n(p.resyncs_received), p.resyncing ? "1" : "0",
		       n(p.sessions), n(p.records_sent), n(p.resends), n(p.records_applied), n(p.records_updated),
		       n(p.records_destroyed), n(p.records_refused), n(p.duplicates), n(p.layout_refused),
		       n(p.last_heard_ms)});
	}
	r.num("rows", s.peers.size());
	r.num("next", 0);
	for (size_t i = 0; i < s.peers.size(); i++)
		if (!s.peers[i].layout_error.empty())
			r.text("layout_error/" + std::to_string(i), s.peers[i].layout_error);
	return r;
}

reply ops::tables()
{
	reply r;
	const ct::stats s = dp_.ct().stats();
	const lb::lb_stats l = dp_.lb().stats();
	const sockmap::stats sm = dp_.sm().get_stats();
	r.num("ct4/entries", s.flows4);  // flows; a NATed one also holds a reply alias
	r.num("ct4/nat_aliases", s.nat_aliases4);
	r.num("ct4/buckets", s.hash4.buckets);
	r.num("ct4/load_pct", static_cast<uint64_t>(s.hash4.load * 100 + 0.5));
	r.num("ct6/entries", s.flows6);
	r.num("ct6/nat_aliases", s.nat_aliases6);
	r.num("ct6/buckets", s.hash6.buckets);
	r.num("ct6/load_pct", static_cast<uint64_t>(s.hash6.load * 100 + 0.5));
	r.num("ct_overflow/entries", s.lru4.entries + s.lru6.entries);
	r.num("ct_overflow/capacity", s.lru4.capacity + s.lru6.capacity);
	r.num("ct/bytes", s.bytes);
	r.num("lb/services", l.services);
	r.num("lb/backends", l.backends);
	r.num("lb/bytes", l.bytes);
	r.num("sockmap/entries", sm.entries);
	r.num("sockmap/bytes", sm.bytes);
	r.num("routes/entries", dp_.pl().fib().route_count());
	r.num("routes/next_hops", dp_.pl().fib().hop_count());
	table_out t(r, {"time_s", "table", "from_buckets", "to_buckets"});
	for (const resize_rec& x : resizes_)
		t.add({std::to_string((x.at_ns - t0_ns_) / 1'000'000'000), x.table, std::to_string(x.from),
		       std::to_string(x.to)});
	t.finish(0);
	return r;
}

}  // namespace ctplane::dataplane
