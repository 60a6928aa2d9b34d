// SPDX-License-Identifier: BSD-3-Clause
#include "state/format.h"

#include <fcntl.h>
#include <nmmintrin.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#ifndef CTPLANE_BUILD_ID
#define CTPLANE_BUILD_ID "unknown"
#endif

namespace ctplane::state {

namespace {

constexpr char kMagic[8] = {'C', 'T', 'P', 'S', 'T', 'A', 'T', 'E'};
constexpr size_t kHeader = 8 + 4 * 4;
constexpr size_t kSectionHeader = 16 + 4 + 4 + 8 + 4 + 4;
constexpr uint32_t kCrcInit = 0xffffffffu;
constexpr size_t kBuffer = 1u << 20;
constexpr size_t kMaxNames = 256;  // per field, in a file's manifest
constexpr size_t kMaxTables = 64;
constexpr size_t kMaxFields = 1024;  // per table

// CRC32C (Castagnoli) with the SSE4.2 crc32 instructions (x86-64-v2, the
// build's floor), 8 bytes at a time, then 4, 2, 1: the values of DPDK's
// rte_hash_crc, so files written before stay readable (a test compares the
// two), without DPDK in this library.
}  // namespace

uint32_t crc32c(const void* p, size_t n, uint32_t init) noexcept
{
	const auto* b = static_cast<const uint8_t*>(p);
	for (; n > 0 && (reinterpret_cast<uintptr_t>(b) & 7) != 0; n--)
		init = _mm_crc32_u8(init, *b++);
	uint64_t c = init;
	for (; n >= 8; n -= 8, b += 8) {
		uint64_t w;
		std::memcpy(&w, b, 8);
		c = _mm_crc32_u64(c, w);
	}
	init = static_cast<uint32_t>(c);
	if (n & 4) {
		uint32_t w;
		std::memcpy(&w, b, 4);
		init = _mm_crc32_u32(init, w);
		b += 4;
	}
	if (n & 2) {
		uint16_t w;
		std::memcpy(&w, b, 2);
		init = _mm_crc32_u16(init, w);
		b += 2;
	}
	if (n & 1)
		init = _mm_crc32_u8(init, *b);
	return init;
}

namespace {

uint32_t crc(const void* p, size_t n, uint32_t init) { return crc32c(p, n, init); }

void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get32(const uint8_t* p)
{
	uint32_t v;
	std::memcpy(&v, p, 4);
	return v;
}
uint64_t get64(const uint8_t* p)
{
	uint64_t v;
	std::memcpy(&v, p, 8);
	return v;
}

unsigned type_size(ftype t)
{
	switch (t) {
	case ftype::u8: return 1;
	case ftype::u16: return 2;
	case ftype::u32: return 4;
	case ftype::u64: return 8;
	case ftype::bytes: return 0;
	}
	return 0;
}

bool type_of(const std::string& s, ftype* t)
{
	for (ftype x : {ftype::u8, ftype::u16, ftype::u32, ftype::u64, ftype::bytes})
		if (s == ftype_name(x)) {
			*t = x;
			return true;
		}
	return false;
}

std::string describe(const field& f)
{
	return std::to_string(f.size) + " bytes (" + ftype_name(f.type) + ")";
}

// What is wrong with a layout, as a writer or a file gives it.
std::string layout_error(const layout& l)
{
	if (l.table.empty() || l.table.size() > 15)
		return "table name \"" + l.table + "\" must have 1 to 15 characters";
	if (l.record_size == 0)
		return "table " + l.table + ": record size 0";
	std::set<std::string> names;
	for (const field& f : l.fields) {
		if (f.name.empty() || !names.insert(f.name).second)
			return "table " + l.table + ": field \"" + f.name + "\" repeated or unnamed";
		if (f.size == 0 || uint64_t{f.offset} + f.size > l.record_size)
			return "table " + l.table + ": field " + f.name + " lies outside its " +
			       std::to_string(l.record_size) + "-byte record";
		if (type_size(f.type) != 0 && type_size(f.type) != f.size)
			return "table " + l.table + ": field " + f.name + " of type " + ftype_name(f.type) + " has " +
			       std::to_string(f.size) + " bytes";
	}
	return "";
}

}  // namespace

const char* ftype_name(ftype t) noexcept
{
	switch (t) {
	case ftype::u8: return "u8";
	case ftype::u16: return "u16";
	case ftype::u32: return "u32";
	case ftype::u64: return "u64";
	case ftype::bytes: return "bytes";
	}
	return "?";
}

const char* build_id() noexcept { return CTPLANE_BUILD_ID; }

field named_values(field f, unsigned n, const char* (*name)(unsigned))
{
	f.named = naming::values;
	for (unsigned v = 0; v < n; v++)
		f.names.emplace_back(v, name(v));
	return f;
}

field named_bits(field f, std::initializer_list<std::pair<uint64_t, const char*>> bits)
{
	f.named = naming::bits;
	for (const auto& [b, n] : bits)
		f.names.emplace_back(b, n);
	return f;
}

const field* layout::find(const std::string& name) const
{
	for (const field& f : fields)
		if (f.name == name)
			return &f;
	return nullptr;
}

// ---- manifests and conversion -----------------------------------------------------

std::string manifest_text(const std::vector<layout>& layouts)
{
	std::ostringstream m;
	m << "ctplane-state " << kVersion << "\nbuild " << build_id() << "\n";
	for (const layout& l : layouts) {
		m << "table " << l.table << " record " << l.record_size << "\n";
		for (const field& f : l.fields) {
			m << "field " << f.name << " " << f.offset << " " << f.size << " " << ftype_name(f.type) << "\n";
			for (const auto& [n, name] : f.names)
				m << (f.named == naming::bits ? "bit " : "value ") << name << " " << n << "\n";
		}
	}
	m << "end\n";
	return m.str();
}

std::string parse_manifest(const std::string& text, std::vector<layout>* out, std::string* build)
{
	std::vector<layout> ls;
	std::istringstream in(text);
	std::string line;
	bool ended = false;
	unsigned lineno = 0;
	while (std::getline(in, line)) {
		lineno++;
		std::istringstream ls_(line);
		std::string w;
		ls_ >> w;
		auto bad = [&](const std::string& why) { return "manifest line " + std::to_string(lineno) + ": " + why; };
		if (ended)
			return bad("text after end");
		if (lineno == 1) {
			unsigned v = 0;
			if (w != "ctplane-state" || !(ls_ >> v) || v != kVersion)
				return bad("expected \"ctplane-state " + std::to_string(kVersion) + "\"");
		} else if (w == "build") {
			if (build != nullptr)
				std::getline(ls_ >> std::ws, *build);
		} else if (w == "table") {
			layout l;
			std::string rec;
			if (!(ls_ >> l.table >> rec >> l.record_size) || rec != "record")
				return bad("expected \"table NAME record BYTES\"");
			if (ls.size() >= kMaxTables)
				return bad("more than " + std::to_string(kMaxTables) + " tables");
			ls.push_back(std::move(l));
		} else if (w == "field") {
			if (ls.empty())
				return bad("field before any table");
			if (ls.back().fields.size() >= kMaxFields)
				return bad("table " + ls.back().table + ": more than " + std::to_string(kMaxFields) + " fields");
			field f;
			std::string t;
			if (!(ls_ >> f.name >> f.offset >> f.size >> t) || !type_of(t, &f.type))
				return bad("expected \"field NAME OFFSET SIZE u8|u16|u32|u64|bytes\"");
			ls.back().fields.push_back(f);
		} else if (w == "value" || w == "bit") {
			if (ls.empty() || ls.back().fields.empty())
				return bad(w + " before any field");
			field& f = ls.back().fields.back();
			const naming kind = w == "bit" ? naming::bits : naming::values;
			std::string name;
			uint64_t n = 0;
			if (!(ls_ >> name >> n) || type_size(f.type) == 0)
				return bad("expected \"" + w + " NAME NUMBER\" after an integer field");
			if (f.named != naming::none && f.named != kind)
				return bad("field " + f.name + ": both values and bits named");
			if (f.names.size() >= kMaxNames)
				return bad("field " + f.name + ": more than " + std::to_string(kMaxNames) + " names");
			for (const auto& [m, other] : f.names)
				if (m == n || other == name)
					return bad("field " + f.name + ": " + name + " or " + std::to_string(n) + " named twice");
			if (kind == naming::bits && (n == 0 || (n & (n - 1)) != 0))
				return bad("field " + f.name + ": bit " + name + " is not one bit");
			f.named = kind;
			f.names.emplace_back(n, name);
		} else if (w == "end") {
			ended = true;
		} else if (!w.empty()) {
			return bad("unknown statement \"" + w + "\"");
		}
	}
	if (!ended)
		return "manifest has no end";
	for (const layout& l : ls)
		if (std::string e = layout_error(l); !e.empty())
			return e;
	*out = std::move(ls);
	return "";
}

std::string compat_error(const layout& theirs, const layout& mine)
{
	for (const field& f : mine.fields)
		if (const field* t = theirs.find(f.name)) {
			// An unsigned field widened since the file was written is
			// zero-extended; any other change of size or type refuses.
			const bool widened = type_size(t->type) != 0 && type_size(f.type) != 0 && t->size < f.size;
			if ((t->size != f.size || t->type != f.type) && !widened)
				return "table " + mine.table + ": field " + f.name + " is " + describe(*t) + " in the file, " +
				       describe(f) + " here";
		}
	return "";
}

std::string converter::build(const layout& theirs, const layout& mine)
{
	if (std::string e = compat_error(theirs, mine); !e.empty())
		return e;
	in_size_ = theirs.record_size;
	out_size_ = mine.record_size;
	plan_.clear();
	blank_.assign(mine.record_size, 0);
	for (const field& f : mine.fields) {
		const field* t = theirs.find(f.name);
		if (t == nullptr) {
			if (f.dflt != 0 && type_size(f.type) != 0)
				std::memcpy(blank_.data() + f.offset, &f.dflt, f.size);  // little-endian
			continue;
		}
		copy c{t->offset, f.offset, std::min(t->size, f.size), f.size, naming::none, {}, f.name};
		if (f.named != naming::none && t->named == f.named) {
			// Their numbers to mine, by name, once: a number of theirs
			// without a name of mine maps to kUnknown (the record refused).
			c.named = f.named;
			for (const auto& [n, name] : t->names) {
				uint64_t m = kUnknown;
				for (const auto& [mn, mname] : f.names)
					if (mname == name)
						m = mn;
				c.map.push_back({n, m, name});
			}
		}
		plan_.push_back(std::move(c));
	}
	return "";
}

bool converter::convert(const uint8_t* in, uint8_t* out, std::string* why) const
{
	std::memcpy(out, blank_.data(), out_size_);
	for (const copy& c : plan_) {
		if (c.from_size < c.to_size)
			std::memset(out + c.to, 0, c.to_size);
		std::memcpy(out + c.to, in + c.from, c.from_size);  // little-endian: zero-extended
		if (c.named == naming::none)
			continue;
		uint64_t v = 0, res = 0;
		std::memcpy(&v, in + c.from, c.from_size);
		auto refuse = [&](const std::string& w) {
			if (why != nullptr)
				*why = "field " + c.name + ": " + w;
			return false;
		};
		auto find = [&](uint64_t n) -> const named_map* {
			for (const named_map& m : c.map)
				if (m.theirs == n)
					return &m;
			return nullptr;
		};
		if (c.named == naming::values) {
			const named_map* m = find(v);
			if (m == nullptr)
				return refuse("value " + std::to_string(v) + " has no name in the file");
			if (m->mine == kUnknown)
				return refuse("value " + std::to_string(v) + " (\"" + m->name + "\") is unknown to this build");
			res = m->mine;
		} else {
			for (uint64_t bits = v; bits != 0; bits &= bits - 1) {
				const named_map* m = find(bits & (~bits + 1));
				if (m == nullptr)
					return refuse("bit " + std::to_string(bits & (~bits + 1)) + " has no name in the file");
				if (m->mine == kUnknown)
					return refuse("flag \"" + m->name + "\" is unknown to this build");
				res |= m->mine;
			}
		}
		std::memcpy(out + c.to, &res, c.to_size);
	}
	return true;
}

// ---- writer -----------------------------------------------------------------------

writer::~writer() { abandon(); }

void writer::abandon() noexcept
{
	if (f_ != nullptr) {
		std::fclose(f_);
		f_ = nullptr;
		::unlink(tmp_.c_str());
	}
}

std::string writer::open(const std::string& path, const std::vector<layout>& layouts)
{
	for (const layout& l : layouts)
		if (std::string e = layout_error(l); !e.empty())
			return e;
	path_ = path;
	tmp_ = path + ".tmp";
	layouts_ = layouts;
	// Created here, by us, owner-only: never through a link planted at the
	// name, never into a file someone else holds open. A leftover of a
	// crashed save is removed (unlink does not follow links) once.
	int fd = -1;
	for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
		fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST && attempt == 0)
			::unlink(tmp_.c_str());
		else if (fd < 0)
			break;
	}
	if (fd < 0)
		return tmp_ + ": " + std::strerror(errno);
	f_ = ::fdopen(fd, "wb");
	if (f_ == nullptr) {
		const int err = errno;
		::close(fd);
		::unlink(tmp_.c_str());
		return tmp_ + ": " + std::strerror(err);
	}
	const std::string text = manifest_text(layouts);
	uint8_t h[kHeader];
	std::memcpy(h, kMagic, 8);
	put32(h + 8, kVersion);
	put32(h + 12, static_cast<uint32_t>(text.size()));
	put32(h + 16, crc(text.data(), text.size(), kCrcInit));
	put32(h + 20, static_cast<uint32_t>(layouts.size()));
	if (std::fwrite(h, 1, sizeof(h), f_) != sizeof(h) || std::fwrite(text.data(), 1, text.size(), f_) != text.size())
		return tmp_ + ": " + std::strerror(errno);
	buf_.reserve(kBuffer);
	return "";
}

std::string writer::flush()
{
	if (buf_.empty())
		return "";
	crc_ = crc(buf_.data(), buf_.size(), crc_);
	if (std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
		return tmp_ + ": " + std::strerror(errno);
	buf_.clear();
	return "";
}

std::string writer::end_section()
{
	if (section_at_ < 0)
		return "";
	if (std::string e = flush(); !e.empty())
		return e;
	uint8_t c[16];
	put64(c, count_);
	put32(c + 8, crc_);
	put32(c + 12, 0);
	const long end = std::ftell(f_);
	if (std::fseek(f_, section_at_ + 24, SEEK_SET) != 0 || std::fwrite(c, 1, sizeof(c), f_) != sizeof(c) ||
	    std::fseek(f_, end, SEEK_SET) != 0)
		return tmp_ + ": " + std::strerror(errno);
	section_at_ = -1;
	return "";
}

std::string writer::begin(const std::string& table)
{
	if (f_ == nullptr)
		return "state file not open";
	if (!err_.empty())
		return err_;
	if (std::string e = end_section(); !e.empty())
		return err_ = e;
	if (next_ >= layouts_.size() || layouts_[next_].table != table)
		return err_ = "table " + table + " written out of the manifest's order";
	const layout& l = layouts_[next_++];
	uint8_t h[kSectionHeader] = {};
	std::memcpy(h, l.table.data(), l.table.size());
	put32(h + 16, l.record_size);
	section_at_ = std::ftell(f_);
	if (std::fwrite(h, 1, sizeof(h), f_) != sizeof(h))
		return err_ = tmp_ + ": " + std::strerror(errno);
	count_ = 0;
	crc_ = kCrcInit;
	rec_ = l.record_size;
	return "";
}

void writer::add(const void* record)
{
	if (f_ == nullptr || section_at_ < 0 || !err_.empty())
		return;
	const auto* r = static_cast<const uint8_t*>(record);
	buf_.insert(buf_.end(), r, r + rec_);
	count_++;
	if (buf_.size() >= kBuffer)
		if (std::string e = flush(); !e.empty())
			err_ = e;
}

std::string writer::finish()
{
	if (f_ == nullptr)
		return "state file not open";
	std::string e = err_;
	if (e.empty())
		e = end_section();
	if (e.empty() && next_ != layouts_.size())
		e = "table " + layouts_[next_].table + " was not written";
	if (e.empty() && (std::fflush(f_) != 0 || ::fsync(fileno(f_)) != 0))
		e = tmp_ + ": " + std::strerror(errno);
	if (!e.empty()) {
		abandon();
		return e;
	}
	std::fclose(f_);
	f_ = nullptr;
	if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
		e = path_ + ": " + std::strerror(errno);
		::unlink(tmp_.c_str());
		return e;
	}
	// The rename itself is durable once the directory is.
	const size_t slash = path_.rfind('/');
	const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
	if (int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY); fd >= 0) {
		(void)::fsync(fd);
		::close(fd);
	}
	return "";
}

// ---- reader -----------------------------------------------------------------------

reader::~reader()
{
	if (map_ != nullptr)
		::munmap(const_cast<uint8_t*>(map_), size_);
}

std::string reader::open(const std::string& path)
{
	path_ = path;
	// Non-blocking: a FIFO at the path must not hang the caller.
	const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return path + ": " + std::strerror(errno);
	struct stat st;
	if (::fstat(fd, &st) != 0) {
		const int err = errno;
		::close(fd);
		return path + ": " + std::strerror(err);
	}
	if (!S_ISREG(st.st_mode)) {
		::close(fd);
		return path + ": not a regular file";
	}
	size_ = static_cast<size_t>(st.st_size);
	if (size_ < kHeader) {
		::close(fd);
		return path + ": not a ctplane state file (" + std::to_string(size_) + " bytes)";
	}
	void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
	::close(fd);
	if (m == MAP_FAILED)
		return path + ": " + std::strerror(errno);
	map_ = static_cast<const uint8_t*>(m);
	if (std::memcmp(map_, kMagic, 8) != 0)
		return path + ": not a ctplane state file (bad magic)";
	if (const uint32_t v = get32(map_ + 8); v != kVersion)
		return path + ": format version " + std::to_string(v) + ", this build reads " + std::to_string(kVersion);
	const uint64_t mlen = get32(map_ + 12);
	if (kHeader + mlen > size_)
		return path + ": cut short (in the manifest)";
	if (crc(map_ + kHeader, mlen, kCrcInit) != get32(map_ + 16))
		return path + ": manifest checksum mismatch";
	const uint32_t nsections = get32(map_ + 20);

	// The manifest.
	std::vector<layout> ls;
	if (std::string e = parse_manifest(std::string(reinterpret_cast<const char*>(map_ + kHeader), mlen), &ls, &build_);
	    !e.empty())
		return path + ": " + e;
	for (layout& l : ls) {
		section s;
		s.file = std::move(l);
		sections_.push_back(std::move(s));
	}
	if (sections_.size() != nsections)
		return path + ": the header counts " + std::to_string(nsections) + " sections, the manifest " +
		       std::to_string(sections_.size());

	// The sections, each against the manifest, and their checksums.
	size_t at = kHeader + mlen;
	for (section& s : sections_) {
		if (at + kSectionHeader > size_)
			return path + ": cut short (section " + s.file.table + ")";
		const uint8_t* h = map_ + at;
		const std::string name(reinterpret_cast<const char*>(h), strnlen(reinterpret_cast<const char*>(h), 16));
		if (name != s.file.table)
			return path + ": section \"" + name + "\" where the manifest has table " + s.file.table;
		if (get32(h + 16) != s.file.record_size)
			return path + ": table " + s.file.table + ": records of " + std::to_string(get32(h + 16)) +
			       " bytes, the manifest says " + std::to_string(s.file.record_size);
		s.count = get64(h + 24);
		at += kSectionHeader;
		if (s.count > (size_ - at) / s.file.record_size)
			return path + ": cut short (table " + s.file.table + " has " + std::to_string(s.count) + " records)";
		s.data = map_ + at;
		const size_t bytes = s.count * s.file.record_size;
		if (crc(s.data, bytes, kCrcInit) != get32(h + 32))
			return path + ": table " + s.file.table + ": checksum mismatch";
		at += bytes;
	}
	if (at != size_)
		return path + ": " + std::to_string(size_ - at) + " bytes after the last section";
	return "";
}

const reader::section* reader::find(const std::string& table) const
{
	for (const section& s : sections_)
		if (s.file.table == table)
			return &s;
	return nullptr;
}

const layout* reader::file_layout(const std::string& table) const
{
	const section* s = find(table);
	return s != nullptr ? &s->file : nullptr;
}

uint64_t reader::count(const std::string& table) const
{
	const section* s = find(table);
	return s != nullptr ? s->count : 0;
}

std::string reader::check(const layout& mine) const
{
	const section* s = find(mine.table);
	return s == nullptr ? "" : compat_error(s->file, mine);
}

std::string reader::each(const layout& mine, const std::function<void(const void*)>& fn) const
{
	const section* s = find(mine.table);
	if (s == nullptr)
		return "";
	converter cv;
	if (std::string e = cv.build(s->file, mine); !e.empty())
		return e;
	std::vector<uint8_t> rec(mine.record_size);
	for (uint64_t i = 0; i < s->count; i++) {
		std::string why;
		if (!cv.convert(s->data + i * s->file.record_size, rec.data(), &why))
			return "table " + mine.table + ": record " + std::to_string(i) + ": " + why;
		fn(rec.data());
	}
	return "";
}

}  // namespace ctplane::state
