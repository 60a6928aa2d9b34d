#!/usr/bin/env python3
"""Counts test cases from a meson test run and prints "N passed, N failed".

Every test binary is GoogleTest and wrote <binary>.xml into
<builddir>/test-results/. A binary meson saw fail without a failing case in
its XML (a crash, a timeout, a sanitizer abort) counts as one failed case.
Exits 1 when anything failed.
"""
import json
import os
import sys
import xml.etree.ElementTree as ET


def main(builddir):
    results = os.path.join(builddir, "test-results")
    passed = failed = 0
    per_binary = {}
    for name in sorted(os.listdir(results)) if os.path.isdir(results) else []:
        if not name.endswith(".xml"):
            continue
        try:
            root = ET.parse(os.path.join(results, name)).getroot()
        except ET.ParseError:
            continue  # cut short by a crash; meson's log says which
        p = f = 0
        for case in root.iter("testcase"):
            if case.get("result", "completed") == "skipped" or case.find("skipped") is not None:
                continue
            if case.find("failure") is not None or case.find("error") is not None:
                f += 1
            else:
                p += 1
        per_binary[name[:-4]] = f
        passed += p
        failed += f

    log = os.path.join(builddir, "meson-logs", "testlog.json")
    if os.path.exists(log):
        # Bytes a test printed (libxdp, curl) may not be UTF-8: read them
        # replaced; a record that still does not parse counts as failed.
        with open(log, errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    print(f"testlog.json: an unreadable record: {line[:120]!r}", file=sys.stderr)
                    failed += 1
                    continue
                if rec.get("result") in ("OK", "SKIP", "EXPECTEDFAIL"):
                    continue
                # meson's name is "project:suites / test"; the XML is named
                # after the binary (GoogleTest) or the test (e2e).
                test = rec["name"].split("/")[-1].strip()
                binary = os.path.basename(rec.get("command", [test])[0])
                if per_binary.get(binary, 0) == 0 and per_binary.get(test, 0) == 0:
                    print(f"{rec['name']}: {rec['result']} with no failing case recorded",
                          file=sys.stderr)
                    failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build"))
