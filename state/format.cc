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

const field* layout::find(const std::string& name) const
{
	for (const field& f : fields)
		if (f.name == name)
			return &f;
	return nullptr;
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
	const std::string text = m.str();
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
	std::istringstream in(std::string(reinterpret_cast<const char*>(map_ + kHeader), mlen));
	std::string line;
	bool ended = false;
	unsigned lineno = 0;
	while (std::getline(in, line)) {
		lineno++;
		std::istringstream ls(line);
		std::string w;
		ls >> w;
		auto bad = [&](const std::string& why) { return path + ": manifest line " + std::to_string(lineno) + ": " + why; };
		if (ended)
			return bad("text after end");
		if (lineno == 1) {
			unsigned v = 0;
			if (w != "ctplane-state" || !(ls >> v) || v != kVersion)
				return bad("expected \"ctplane-state " + std::to_string(kVersion) + "\"");
		} else if (w == "build") {
			std::getline(ls >> std::ws, build_);
		} else if (w == "table") {
			section s;
			std::string rec;
			if (!(ls >> s.file.table >> rec >> s.file.record_size) || rec != "record")
				return bad("expected \"table NAME record BYTES\"");
			sections_.push_back(std::move(s));
		} else if (w == "field") {
			if (sections_.empty())
				return bad("field before any table");
			field f;
			std::string t;
			if (!(ls >> f.name >> f.offset >> f.size >> t) || !type_of(t, &f.type))
				return bad("expected \"field NAME OFFSET SIZE u8|u16|u32|u64|bytes\"");
			sections_.back().file.fields.push_back(f);
		} else if (w == "value" || w == "bit") {
			if (sections_.empty() || sections_.back().file.fields.empty())
				return bad(w + " before any field");
			field& f = sections_.back().file.fields.back();
			const naming kind = w == "bit" ? naming::bits : naming::values;
			std::string name;
			uint64_t n = 0;
			if (!(ls >> name >> n) || type_size(f.type) == 0)
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
		return path + ": manifest has no end";
	if (sections_.size() != nsections)
		return path + ": the header counts " + std::to_string(nsections) + " sections, the manifest " +
		       std::to_string(sections_.size());
	for (const section& s : sections_)
		if (std::string e = layout_error(s.file); !e.empty())
			return path + ": " + e;

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
	if (s == nullptr)
		return "";
	for (const field& f : mine.fields)
		if (const field* theirs = s->file.find(f.name)) {
			// An unsigned field widened since the file was written is
			// zero-extended; any other change of size or type refuses.
			const bool widened = type_size(theirs->type) != 0 && type_size(f.type) != 0 && theirs->size < f.size;
			if ((theirs->size != f.size || theirs->type != f.type) && !widened)
				return "table " + mine.table + ": field " + f.name + " is " + describe(*theirs) +
				       " in the file, " + describe(f) + " here";
		}
	return "";
}

std::string reader::each(const layout& mine, const std::function<void(const void*)>& fn) const
{
	const section* s = find(mine.table);
	if (s == nullptr)
		return "";
	struct copy {
		uint32_t from, to, from_size, to_size;
		const field* mine = nullptr;    // named on both sides: mapped
		const field* theirs = nullptr;
	};
	std::vector<copy> plan;
	std::vector<uint8_t> blank(mine.record_size, 0);
	for (const field& f : mine.fields) {
		if (const field* theirs = s->file.find(f.name)) {
			copy c{theirs->offset, f.offset, std::min(theirs->size, f.size), f.size};
			if (f.named != naming::none && theirs->named == f.named) {
				c.mine = &f;
				c.theirs = theirs;
			}
			plan.push_back(c);
		} else if (f.dflt != 0 && type_size(f.type) != 0) {
			std::memcpy(blank.data() + f.offset, &f.dflt, f.size);  // little-endian
		}
	}
	auto name_of = [](const field& f, uint64_t n) -> const std::string* {
		for (const auto& [m, name] : f.names)
			if (m == n)
				return &name;
		return nullptr;
	};
	auto number_of = [](const field& f, const std::string& name, uint64_t* n) {
		for (const auto& [m, other] : f.names)
			if (other == name) {
				*n = m;
				return true;
			}
		return false;
	};
	std::vector<uint8_t> rec(mine.record_size);
	for (uint64_t i = 0; i < s->count; i++) {
		const uint8_t* in = s->data + i * s->file.record_size;
		std::memcpy(rec.data(), blank.data(), rec.size());
		for (const copy& c : plan) {
			std::memset(rec.data() + c.to, 0, c.to_size);
			std::memcpy(rec.data() + c.to, in + c.from, c.from_size);  // little-endian: zero-extended
			if (c.mine == nullptr)
				continue;
			uint64_t v = 0, out = 0;
			std::memcpy(&v, in + c.from, c.from_size);
			auto refuse = [&](const std::string& why) {
				return "table " + mine.table + ": record " + std::to_string(i) + ": field " + c.mine->name + ": " + why;
			};
			if (c.mine->named == naming::values) {
				const std::string* name = name_of(*c.theirs, v);
				if (name == nullptr)
					return refuse("value " + std::to_string(v) + " has no name in the file");
				if (!number_of(*c.mine, *name, &out))
					return refuse("value " + std::to_string(v) + " (\"" + *name + "\") is unknown to this build");
			} else {
				for (uint64_t bits = v; bits != 0; bits &= bits - 1) {
					const uint64_t bit = bits & (~bits + 1);
					const std::string* name = name_of(*c.theirs, bit);
					uint64_t mine_bit = 0;
					if (name == nullptr)
						return refuse("bit " + std::to_string(bit) + " has no name in the file");
					if (!number_of(*c.mine, *name, &mine_bit))
						return refuse("flag \"" + *name + "\" is unknown to this build");
					out |= mine_bit;
				}
			}
			std::memcpy(rec.data() + c.to, &out, c.to_size);
		}
		fn(rec.data());
	}
	return "";
}

}  // namespace ctplane::state
