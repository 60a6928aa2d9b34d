// SPDX-License-Identifier: BSD-3-Clause
#include "control/ct_text.h"

#include <cinttypes>
#include <cstdio>

#include "net/addr.h"

namespace ctplane::dataplane {

const char* proto_name(uint8_t p) noexcept
{
	switch (p) {
	case ct::kProtoTCP: return "tcp";
	case ct::kProtoUDP: return "udp";
	case ct::kProtoICMP: return "icmp";
	case ct::kProtoICMPv6: return "icmpv6";
	default: return nullptr;
	}
}

std::string proto_str(uint8_t p)
{
	const char* n = proto_name(p);
	return n != nullptr ? n : std::to_string(p);
}

const char* event_name(ct::event_type t) noexcept
{
	static const char* kType[] = {"new", "update", "destroy", "refused"};
	return kType[static_cast<unsigned>(t)];
}

const char* reason_name(ct::destroy_reason r) noexcept
{
	static const char* kWhy[] = {"", "expired", "evicted", "erased", "refused", "quota", "synced"};
	return kWhy[static_cast<unsigned>(r)];
}

namespace {

std::string quoted(const std::string& s) { return "\"" + s + "\""; }  // addresses and names: nothing to escape

std::string flag_names(uint8_t fl)
{
	static constexpr struct {
		uint8_t bit;
		const char* name;
	} kFlags[] = {{ct::kReplied, "replied"},   {ct::kAssured, "assured"},     {ct::kNat, "nat"},
		      {ct::kFinOrig, "fin_orig"},   {ct::kFinReply, "fin_reply"}, {ct::kSimOpen, "sim_open"}};
	std::string s;
	for (const auto& f : kFlags)
		if (fl & f.bit)
			s += (s.empty() ? "" : ",") + std::string(f.name);
	return s;
}

}  // namespace

std::string flow_json(const ct::flow_view& f, uint32_t now_ms, const std::string& backend)
{
	const ct::tuple& o = f.orig;
	std::string nat = "null", be = "null";
	if (f.dnat) {
		nat = quoted(net::endpoint_string(f.nat_addr, o.family, f.nat_port));
		be = quoted(backend);
	}
	std::string snat = "null";
	if (f.snat)
		snat = quoted(net::endpoint_string(f.snat_addr, o.family, f.snat_port));
	const int32_t left = static_cast<int32_t>(f.expires_ms - now_ms);
	char tail[160];
	std::snprintf(tail, sizeof tail,
		      ", \"packets\": [%" PRIu32 ", %" PRIu32 "], \"bytes\": [%" PRIu64 ", %" PRIu64 "], \"expires_in_ms\": %" PRId32
		      "}",
		      f.packets[0], f.packets[1], f.bytes[0], f.bytes[1], left > 0 ? left : 0);
	return "{\"family\": " + std::to_string(o.family) + ", \"proto\": " + quoted(proto_str(o.proto)) +
	       ", \"src\": " + quoted(net::to_string(o.src, o.family)) + ", \"sport\": " + std::to_string(o.sport) +
	       ", \"dst\": " + quoted(net::to_string(o.dst, o.family)) + ", \"dport\": " + std::to_string(o.dport) +
	       ", \"zone\": " + std::to_string(o.zone) + ", \"state\": " + quoted(ct::state_name(f.state)) +
	       ", \"flags\": " + quoted(flag_names(f.flags)) + ", \"nat\": " + nat + ", \"snat\": " + snat + ", \"backend\": " + be + tail;
}

std::string event_line(const ct::event& e, uint64_t time_ns)
{
	const ct::tuple& o = e.orig;
	std::string type = event_name(e.type);
	for (char& c : type)
		c = static_cast<char>(c - 'a' + 'A');
	char head[48];
	std::snprintf(head, sizeof head, "[%" PRIu64 ".%06" PRIu64 "] [%s] ", time_ns / 1'000'000'000,
		      time_ns % 1'000'000'000 / 1000, type.c_str());
	std::string s = head + proto_str(o.proto) + " src=" + net::to_string(o.src, o.family) +
			" dst=" + net::to_string(o.dst, o.family) + " sport=" + std::to_string(o.sport) +
			" dport=" + std::to_string(o.dport) + " state=" + ct::state_name(e.state);
	if (e.type == ct::event_type::state_change)
		s += std::string(" old_state=") + ct::state_name(e.old_state);
	if (e.type == ct::event_type::refused)
		s += std::string(" reason=") + reason_name(e.reason);
	if (e.type == ct::event_type::destroyed)
		s += std::string(" reason=") + reason_name(e.reason) + " packets=" + std::to_string(e.packets[0]) +
		     "/" + std::to_string(e.packets[1]) + " bytes=" + std::to_string(e.bytes[0]) + "/" +
		     std::to_string(e.bytes[1]);
	return s;
}

}  // namespace ctplane::dataplane
