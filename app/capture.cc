// SPDX-License-Identifier: BSD-3-Clause
#include "app/capture.h"

#include <pcap/pcap.h>

#include <cerrno>
#include <cstring>

#include "net/bytes.h"

namespace ctplane::dataplane {

namespace {

constexpr uint16_t kEthIpv4 = 0x0800, kEthIpv6 = 0x86dd;
constexpr uint16_t kArphrdEther = 1;
constexpr uint32_t kEthHdr = 14;

uint32_t le32(const uint8_t* p) noexcept
{
	return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// An address family of the BSD loopback header: AF_INET is 2 everywhere;
// AF_INET6 is 10 (Linux), 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (Darwin).
uint16_t family_type(uint32_t af) noexcept
{
	switch (af) {
	case 2:
		return kEthIpv4;
	case 10:
	case 24:
	case 28:
	case 30:
		return kEthIpv6;
	default:
		return 0;
	}
}

}  // namespace

const char* link_name(int linktype) noexcept
{
	switch (linktype) {
	case kLinkEthernet:
		return "ethernet";
	case kLinkSll:
		return "linux-sll";
	case kLinkSll2:
		return "linux-sll2";
	case kLinkRaw:
	case kLinkRawDlt:
	case kLinkRawOpenBsd:
		return "raw-ip";
	case kLinkIpv4:
		return "ipv4";
	case kLinkIpv6:
		return "ipv6";
	case kLinkNull:
		return "null";
	case kLinkLoop:
		return "loop";
	default:
		return "";
	}
}

convert to_ethernet(int linktype, const uint8_t* in, uint32_t caplen, uint32_t len, uint8_t* out, uint32_t cap,
		    uint32_t* out_caplen, uint32_t* out_len) noexcept
{
	if (len < caplen)
		len = caplen;  // a damaged record: what was captured is what there is
	uint32_t hdr = 0;
	uint16_t type = 0;
	const uint8_t* src = nullptr;
	switch (linktype) {
	case kLinkEthernet:
		*out_caplen = caplen;
		*out_len = len;
		if (caplen > cap)
			return convert::oversize;
		std::memcpy(out, in, caplen);
		return convert::ok;
	case kLinkSll:  // type, ARPHRD, address length, 8 address bytes, protocol
		hdr = 16;
		if (caplen < hdr)
			return convert::truncated;
		type = net::be16(in + 14);
		if (net::be16(in + 2) == kArphrdEther && net::be16(in + 4) == 6)
			src = in + 6;
		break;
	case kLinkSll2:  // protocol, reserved, ifindex, ARPHRD, type, address length, 8 address bytes
		hdr = 20;
		if (caplen < hdr)
			return convert::truncated;
		type = net::be16(in);
		if (net::be16(in + 8) == kArphrdEther && in[11] == 6)
			src = in + 12;
		break;
	case kLinkRaw:
	case kLinkRawDlt:
	case kLinkRawOpenBsd:
		if (caplen < 1)
			return convert::truncated;
		type = (in[0] >> 4) == 4 ? kEthIpv4 : (in[0] >> 4) == 6 ? kEthIpv6 : 0;
		break;
	case kLinkIpv4:
		type = kEthIpv4;
		break;
	case kLinkIpv6:
		type = kEthIpv6;
		break;
	case kLinkNull: {  // the capturing host's byte order, which the file does not say
		hdr = 4;
		if (caplen < hdr)
			return convert::truncated;
		const uint32_t le = le32(in);
		type = family_type((le & 0xffff0000u) != 0 ? __builtin_bswap32(le) : le);
		break;
	}
	case kLinkLoop:
		hdr = 4;
		if (caplen < hdr)
			return convert::truncated;
		type = family_type(net::be32(in));
		break;
	default:
		return convert::unsupported;
	}
	if (type == 0)
		return convert::unsupported;
	*out_caplen = kEthHdr + caplen - hdr;
	*out_len = kEthHdr + len - hdr;
	if (*out_caplen > cap)
		return convert::oversize;
	std::memset(out, 0, 6);
	if (src != nullptr)
		std::memcpy(out + 6, src, 6);
	else
		std::memset(out + 6, 0, 6);
	net::put16(out + 12, type);
	std::memcpy(out + kEthHdr, in + hdr, caplen - hdr);
	return convert::ok;
}

namespace {

// Classic pcap: libpcap reads it (both byte orders, micro- and nanosecond
// files, the modified formats).
class pcap_reader final : public capture_reader {
public:
	explicit pcap_reader(pcap_t* p) : p_(p, pcap_close), lt_(pcap_datalink(p)) {}
	int next(capture_frame* f) override
	{
		pcap_pkthdr* h;
		const u_char* d;
		const int rc = pcap_next_ex(p_.get(), &h, &d);
		if (rc == -2)
			return 0;
		if (rc != 1) {
			err_ = pcap_geterr(p_.get());
			return -1;
		}
		*f = capture_frame{d, h->caplen, h->len,
				   uint64_t(h->ts.tv_sec) * 1'000'000'000 + uint64_t(h->ts.tv_usec), lt_};  // opened in ns
		return 1;
	}
	int first_linktype() const noexcept override { return lt_; }
	long offset() const noexcept override { return std::ftell(pcap_file(p_.get())); }

private:
	std::unique_ptr<pcap_t, void (*)(pcap_t*)> p_;
	int lt_;
};

// pcapng (draft-ietf-opsawg-pcapng): section headers, interface
// descriptions, enhanced / simple / obsolete packet blocks; every other
// block is skipped by its length.
class pcapng_reader final : public capture_reader {
public:
	explicit pcapng_reader(FILE* f) : f_(f, std::fclose) {}
	int next(capture_frame* f) override;
	int first_linktype() const noexcept override { return first_lt_; }
	long offset() const noexcept override { return std::ftell(f_.get()); }
	// Reads the first section header; false (error()) if there is none.
	bool start();

private:
	struct iface {
		int linktype;
		uint32_t snaplen;
		bool binary;  // resolution 2^-res, else 10^-res
		uint8_t res;
	};
	enum : uint32_t { kShb = 0x0A0D0D0A, kIdb = 1, kOpb = 2, kSpb = 3, kEpb = 6 };
	int fail(const std::string& what)
	{
		err_ = "pcapng block at byte " + std::to_string(block_at_) + ": " + what;
		return -1;
	}
	uint16_t u16(const uint8_t* p) const noexcept
	{
		const uint16_t v = static_cast<uint16_t>(p[0] | p[1] << 8);
		return swap_ ? __builtin_bswap16(v) : v;
	}
	uint32_t u32(const uint8_t* p) const noexcept
	{
		const uint32_t v = le32(p);
		return swap_ ? __builtin_bswap32(v) : v;
	}
	// 1: a block in body_ (its type in *type); 0: the end; -1: damaged.
	int read_block(uint32_t* type);
	int section(const uint8_t* body, size_t n);
	int interface(const uint8_t* body, size_t n);
	uint64_t to_ns(const iface& i, uint64_t ts) const noexcept;

	std::unique_ptr<FILE, int (*)(FILE*)> f_;
	std::vector<uint8_t> body_;
	std::vector<iface> ifaces_;
	bool swap_ = false;
	int first_lt_ = -1;
	long block_at_ = 0;
};

// The block's body (between its two lengths) into body_.
int pcapng_reader::read_block(uint32_t* type)
{
	block_at_ = std::ftell(f_.get());
	uint8_t h[8];
	const size_t got = std::fread(h, 1, 8, f_.get());
	if (got == 0 && std::feof(f_.get()))
		return 0;
	if (got != 8)
		return fail("truncated header");
	const uint32_t raw_type = le32(h);
	if (raw_type == kShb) {
		// Its byte order is the magic's, after the length.
		uint8_t m[4];
		if (std::fread(m, 1, 4, f_.get()) != 4)
			return fail("truncated section header");
		const uint32_t magic = le32(m);
		if (magic == 0x1A2B3C4D)
			swap_ = false;
		else if (magic == 0x4D3C2B1A)
			swap_ = true;
		else
			return fail("bad byte-order magic");
		if (std::fseek(f_.get(), -4, SEEK_CUR) != 0)
			return fail(std::strerror(errno));
	}
	*type = u32(h);
	const uint32_t total = u32(h + 4);
	if (total < 12 || total % 4 != 0 || total > kMaxBlock)
		return fail("bad block length " + std::to_string(total));
	body_.resize(total - 12);
	uint8_t trailer[4];
	if (std::fread(body_.data(), 1, body_.size(), f_.get()) != body_.size() ||
	    std::fread(trailer, 1, 4, f_.get()) != 4)
		return fail("truncated block");
	if (u32(trailer) != total)
		return fail("block lengths differ");
	return 1;
}

int pcapng_reader::section(const uint8_t* body, size_t n)
{
	if (n < 16)
		return fail("short section header");
	if (u16(body + 4) != 1)
		return fail("pcapng major version " + std::to_string(u16(body + 4)) + " (1 is read)");
	ifaces_.clear();  // interface ids count from 0 again in a new section
	return 1;
}

int pcapng_reader::interface(const uint8_t* body, size_t n)
{
	if (n < 8)
		return fail("short interface description");
	if (ifaces_.size() >= kMaxInterfaces)
		return fail("more than " + std::to_string(kMaxInterfaces) + " interfaces in a section");
	iface i{u16(body), u32(body + 4), false, 6};
	// Options: code, length, value padded to 4 bytes; if_tsresol is 9.
	for (size_t at = 8; at + 4 <= n;) {
		const uint16_t code = u16(body + at), olen = u16(body + at + 2);
		if (code == 0)
			break;
		if (at + 4 + olen > n)
			return fail("option past its block");
		if (code == 9 && olen >= 1) {
			const uint8_t r = body[at + 4];
			i.binary = (r & 0x80) != 0;
			i.res = r & 0x7f;
			if ((i.binary && i.res > 63) || (!i.binary && i.res > 19))
				return fail("timestamp resolution out of range");
		}
		at += 4 + ((olen + 3u) & ~3u);
	}
	if (first_lt_ < 0)
		first_lt_ = i.linktype;
	ifaces_.push_back(i);
	return 1;
}

uint64_t pcapng_reader::to_ns(const iface& i, uint64_t ts) const noexcept
{
	if (i.binary)
		return static_cast<uint64_t>((static_cast<unsigned __int128>(ts) * 1'000'000'000u) >> i.res);
	uint64_t p = 1;
	if (i.res <= 9) {
		for (unsigned k = i.res; k < 9; k++)
			p *= 10;
		return ts * p;
	}
	for (unsigned k = 9; k < i.res; k++)
		p *= 10;
	return ts / p;
}

bool pcapng_reader::start()
{
	uint32_t type = 0;
	if (read_block(&type) != 1 || type != kShb || section(body_.data(), body_.size()) != 1) {
		if (err_.empty())
			err_ = "not a pcapng file";
		return false;
	}
	// On to the first interface, so that its link type is known before a
	// frame is read; nothing but blocks that describe may come first.
	for (;;) {
		const int rc = read_block(&type);
		if (rc == 0)
			return true;  // no interface, no frames
		if (rc != 1)
			return false;
		if (type == kIdb)
			return interface(body_.data(), body_.size()) == 1;
		if (type == kEpb || type == kOpb || type == kSpb) {
			fail("a packet before any interface description");
			return false;
		}
		if (type == kShb && section(body_.data(), body_.size()) != 1)
			return false;
	}
}

int pcapng_reader::next(capture_frame* f)
{
	// Bounded by the file: every pass consumes one block.
	for (;;) {
		uint32_t type = 0;
		const int rc = read_block(&type);
		if (rc != 1)
			return rc;
		const uint8_t* b = body_.data();
		const size_t n = body_.size();
		uint32_t id = 0, caplen = 0, len = 0;
		uint64_t ts = 0;
		size_t data = 0;
		switch (type) {
		case kShb:
			if (section(b, n) != 1)
				return -1;
			continue;
		case kIdb:
			if (interface(b, n) != 1)
				return -1;
			continue;
		case kEpb:
		case kOpb:  // the obsolete one: a 16-bit interface id, then 16 bits of drops
			if (n < 20)
				return fail("short packet block");
			id = type == kEpb ? u32(b) : u16(b);
			ts = uint64_t{u32(b + 4)} << 32 | u32(b + 8);
			caplen = u32(b + 12);
			len = u32(b + 16);
			data = 20;
			break;
		case kSpb:
			if (n < 4)
				return fail("short packet block");
			len = u32(b);
			data = 4;
			caplen = static_cast<uint32_t>(std::min<size_t>(len, n - 4));
			if (!ifaces_.empty() && ifaces_[0].snaplen != 0)
				caplen = std::min(caplen, ifaces_[0].snaplen);
			break;
		default:
			continue;  // statistics, name resolution, custom, ...
		}
		if (id >= ifaces_.size())
			return fail("packet of interface " + std::to_string(id) + ", which was not described");
		if (caplen > n - data)
			return fail("captured length past its block");
		const iface& i = ifaces_[id];
		*f = capture_frame{b + data, caplen, len, type == kSpb ? 0 : to_ns(i, ts), i.linktype};
		return 1;
	}
}

}  // namespace

std::unique_ptr<capture_reader> capture_reader::open(const std::string& path, std::string* err)
{
	FILE* f = std::fopen(path.c_str(), "rb");
	if (f == nullptr) {
		*err = std::strerror(errno);
		return nullptr;
	}
	uint8_t m[4] = {};
	const size_t got = std::fread(m, 1, 4, f);
	if (got == 4 && le32(m) == 0x0A0D0D0A) {
		std::rewind(f);
		auto r = std::make_unique<pcapng_reader>(f);
		if (!r->start()) {
			*err = r->error();
			return nullptr;
		}
		return r;
	}
	std::rewind(f);
	char e[PCAP_ERRBUF_SIZE] = {};
	// Nanosecond timestamps as they are: a file in microseconds is scaled.
	pcap_t* p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, e);
	if (p == nullptr) {
		std::fclose(f);
		*err = e;
		return nullptr;
	}
	return std::make_unique<pcap_reader>(p);
}

}  // namespace ctplane::dataplane
