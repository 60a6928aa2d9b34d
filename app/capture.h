// SPDX-License-Identifier: BSD-3-Clause
//
// Captures as users have them, read as Ethernet frames for the pipeline.
//
// A trace from `tcpdump -i any` is Linux cooked (SLL, SLL2), one from a tun
// device or many tools is raw IP, one from a BSD or macOS loopback is null
// or loop; a pcapng file may mix them, one link type per interface. Each
// frame is given the Ethernet header the pipeline parses: EtherType from
// the capture's own header (SLL protocol, IP version, address family),
// source MAC from SLL's link address when it is one, destination zero (the
// pipeline routes by address, not by MAC).
//
// Classic pcap goes through libpcap; pcapng is read here, because libpcap
// refuses a file whose interfaces differ in link type. Every length in a
// file is checked against what holds it before it is used: a block no
// longer than kMaxBlock, a frame no longer than its block, an interface
// named before it is used, at most kMaxInterfaces of them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace ctplane::dataplane {

// Link types (LINKTYPE_*, tcpdump.org/linktypes.html) a capture may have.
enum : int {
	kLinkNull = 0,         // BSD loopback: 4-byte address family, host order
	kLinkEthernet = 1,
	kLinkRawOpenBsd = 14,  // DLT_RAW on OpenBSD (12 elsewhere, 101 in files)
	kLinkRawDlt = 12,
	kLinkRaw = 101,
	kLinkLoop = 108,       // OpenBSD loopback: address family, network order
	kLinkSll = 113,
	kLinkIpv4 = 228,
	kLinkIpv6 = 229,
	kLinkSll2 = 276,
};

// A short name for a link type ("linux-sll"), or "" if ctplane cannot
// give its frames an Ethernet header.
const char* link_name(int linktype) noexcept;

enum class convert : uint8_t {
	ok,
	oversize,     // the Ethernet frame would not fit the buffer
	truncated,    // shorter than its link-layer header
	unsupported,  // an address family or IP version with no EtherType here
};

// The frame at `in` (caplen bytes captured of len on the wire) of the given
// link type, as an Ethernet frame in out[0, cap): *out_caplen bytes of
// *out_len. Never writes past cap. Ethernet frames pass as they are (the
// parser judges them).
convert to_ethernet(int linktype, const uint8_t* in, uint32_t caplen, uint32_t len, uint8_t* out, uint32_t cap,
		    uint32_t* out_caplen, uint32_t* out_len) noexcept;

struct capture_frame {
	const uint8_t* data;  // valid until the next call
	uint32_t caplen, len;
	uint64_t ts_ns;
	int linktype;
};

class capture_reader {
public:
	static constexpr uint32_t kMaxBlock = 16u << 20;  // a pcapng block
	static constexpr uint32_t kMaxInterfaces = 4096;  // per pcapng section

	// Opens a pcap or pcapng file; nullptr and *err if it is neither.
	static std::unique_ptr<capture_reader> open(const std::string& path, std::string* err);
	virtual ~capture_reader() = default;
	// 1: *f is the next frame; 0: the end; -1: a damaged file (error()).
	virtual int next(capture_frame* f) = 0;
	const std::string& error() const noexcept { return err_; }
	// The link type of the first interface (a classic pcap's only one).
	virtual int first_linktype() const noexcept = 0;
	virtual long offset() const noexcept = 0;  // bytes read (progress)

protected:
	std::string err_;
};

}  // namespace ctplane::dataplane
