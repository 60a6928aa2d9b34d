// SPDX-License-Identifier: BSD-3-Clause
//
// state: snapshot files whose records a later build can read after their
// layout changed (the manifest idea of seeds/003: values described by
// name, so a roll-out adds and drops fields instead of breaking readers).
//
// File layout (little-endian, as the x86-64 machines that run it):
//
//   header     "CTPSTATE" | u32 version (1) | u32 manifest bytes M |
//              u32 CRC32C of the manifest | u32 section count
//   manifest   M bytes of text, one statement per line:
//                ctplane-state 1
//                build <the writer's build id>
//                table <name> record <bytes>
//                field <name> <offset> <size> <type>      (u8 u16 u32 u64 bytes)
//                ...
//                end
//   sections   one per table, in manifest order:
//              char name[16] | u32 record bytes | u32 0 | u64 count |
//              u32 CRC32C of the records | u32 0 | count * record bytes
//
// Every record field is described; a reader takes the fields of its own
// layout by name from the writer's: a field the writer did not have gets
// the reader's documented default (zero unless the layout says otherwise),
// a field the reader does not know is skipped, an unsigned field that was
// widened since is zero-extended, and a field whose type changed otherwise
// (narrowed, bytes resized) refuses the whole file with one line naming the
// table and the field. Enum values and flag bits are named in the manifest
// and mapped by name: a number the file names with a name this build does
// not know refuses the file, naming the table, the record and the field. A section whose record size or length disagrees with the
// manifest, a CRC mismatch, a wrong magic or version, or a file cut short
// is refused before anything is applied: reader::open() checks it all.
//
// Writing: to PATH.tmp (created exclusively, mode 0600, never through a
// symbolic link), fsync, rename over PATH, fsync of the directory:
// a crash leaves the old file or the new one, never half of one.
//
// CRC32C: the SSE4.2 crc32 instructions (the values of DPDK's rte_hash_crc).
//
// Concurrency: a writer or reader object belongs to one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace ctplane::state {

enum class ftype : uint8_t { u8, u16, u32, u64, bytes };
const char* ftype_name(ftype t) noexcept;

// How an integer field's numbers are named: an enum's values, or flag bits.
enum class naming : uint8_t { none, values, bits };

struct field {
	std::string name;
	uint32_t offset = 0, size = 0;
	ftype type = ftype::bytes;
	uint64_t dflt = 0;  // reader side: the value when the file lacks the field (integers)
	// The numbers' names (values: number -> name; bits: mask -> name), in
	// the manifest after the field ("value NAME N" / "bit NAME MASK"): a
	// reader maps the file's numbers to its own by name, so a renumbered
	// enum or flag still restores right.
	naming named = naming::none;
	std::vector<std::pair<uint64_t, std::string>> names;
};

struct layout {
	std::string table;  // at most 15 characters
	uint32_t record_size = 0;
	std::vector<field> fields;
	const field* find(const std::string& name) const;
};

// Names for an enum field's values (0..n-1) or a flags field's bits.
field named_values(field f, unsigned n, const char* (*name)(unsigned));
field named_bits(field f, std::initializer_list<std::pair<uint64_t, const char*>> bits);

// Describes member `m` of record type `R`.
#define CTPLANE_STATE_FIELD(R, m, t) \
	::ctplane::state::field { #m, static_cast<uint32_t>(offsetof(R, m)), static_cast<uint32_t>(sizeof(R::m)), t }

inline constexpr uint32_t kVersion = 1;
// CRC32C of n bytes from `init` (no final inversion): rte_hash_crc's value.
uint32_t crc32c(const void* p, size_t n, uint32_t init) noexcept;
// The build that wrote a file: version and commit (meson), compiler.
const char* build_id() noexcept;

// The manifest text of `layouts` (the file's, and a sync peer's hello).
std::string manifest_text(const std::vector<layout>& layouts);
// Parses a manifest: "" (and *out, *build) or "manifest line N: why".
std::string parse_manifest(const std::string& text, std::vector<layout>* out, std::string* build);
// "" if records of `theirs` convert to `mine`, else the line that refuses
// ("table ct: field expires_in_ms is 4 bytes (u32) in the file, 8 bytes (u64) here").
std::string compat_error(const layout& theirs, const layout& mine);

// The copy plan from another build's layout of a table to this build's,
// made once (names matched, enum values and flag bits mapped), then applied
// per record without allocating: the snapshot reader's and the sync
// receiver's (sync/), which gets a peer's records in the peer's layout.
class converter {
public:
	// "" or compat_error's refusal.
	std::string build(const layout& theirs, const layout& mine);
	uint32_t in_size() const noexcept { return in_size_; }
	uint32_t out_size() const noexcept { return out_size_; }
	// in: in_size() bytes in their layout; out: out_size() in mine. false
	// (and *why: "field state: value 9 (\"syn_proxy\") is unknown to this
	// build") if a named number has no name here; out is then garbage.
	bool convert(const uint8_t* in, uint8_t* out, std::string* why) const;

private:
	static constexpr uint64_t kUnknown = ~uint64_t{0};
	struct named_map {
		uint64_t theirs, mine;
		std::string name;
	};
	struct copy {
		uint32_t from, to, from_size, to_size;
		naming named;
		std::vector<named_map> map;
		std::string name;
	};
	uint32_t in_size_ = 0, out_size_ = 0;
	std::vector<copy> plan_;
	std::vector<uint8_t> blank_;
};

class writer {
public:
	// Nothing is created until open().
	writer() = default;
	~writer();
	writer(const writer&) = delete;
	writer& operator=(const writer&) = delete;

	// Opens PATH.tmp for the tables of `layouts` (written in that order).
	// "" or what is wrong.
	std::string open(const std::string& path, const std::vector<layout>& layouts);
	// Starts the section of the next table; records follow with add().
	std::string begin(const std::string& table);
	void add(const void* record);
	// fsync and rename; "" or what is wrong (the old file, if any, stays).
	std::string finish();
	// Leaves no temporary file behind (also what the destructor does
	// when finish() was not reached).
	void abandon() noexcept;

private:
	std::string flush();
	std::string end_section();

	std::string path_, tmp_;
	std::vector<layout> layouts_;
	FILE* f_ = nullptr;
	size_t next_ = 0;            // index of the next table to begin
	long section_at_ = -1;       // offset of the open section's header
	uint64_t count_ = 0;
	uint32_t crc_ = 0;
	uint32_t rec_ = 0;
	std::vector<uint8_t> buf_;
	std::string err_;
};

class reader {
public:
	reader() = default;
	~reader();
	reader(const reader&) = delete;
	reader& operator=(const reader&) = delete;

	// Maps the file and checks it whole: magic, version, manifest,
	// every section's size and CRC. "" or what is wrong ("PATH: ...").
	std::string open(const std::string& path);
	const std::string& build() const noexcept { return build_; }
	// The writer's layout of `table`, or nullptr if the file has none.
	const layout* file_layout(const std::string& table) const;
	uint64_t count(const std::string& table) const;

	// The copy plan from the file's layout of mine.table to `mine`: "" or
	// the line that refuses it ("table ct: field expires_in_ms is 4 bytes
	// (u32) in the file, 8 bytes (u64) here").
	std::string check(const layout& mine) const;
	// Calls fn(const void* record in my layout) for every record of the
	// table, in file order; check() first. A table absent from the file
	// gives no records. "" or why a record cannot be read ("table ct:
	// record 17: field state: value 9 (\"syn_proxy\") is unknown here"),
	// after the records before it.
	std::string each(const layout& mine, const std::function<void(const void*)>& fn) const;
	// Whether the file has the table at all.
	bool has(const std::string& table) const { return find(table) != nullptr; }

private:
	struct section {
		layout file;
		const uint8_t* data = nullptr;
		uint64_t count = 0;
	};
	const section* find(const std::string& table) const;

	std::string path_, build_;
	const uint8_t* map_ = nullptr;
	size_t size_ = 0;
	std::vector<section> sections_;
};

}  // namespace ctplane::state
