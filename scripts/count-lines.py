#!/usr/bin/env python3
"""Lines of code on the rule issues 11 and 23 use (usage: scripts/count-lines.py [REPO_DIR]): non-blank, non-comment lines of crates/*/src before #[cfg(test)] mod tests;
test-support crates (e2e, testkit, netbed) and test-module files (credit/tests.rs) left out."""
import pathlib, re, sys
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
skip = {"trinity-e2e", "trinity-testkit", "trinity-netbed"}
total = 0; per = {}
for f in sorted(root.glob("crates/*/src/**/*.rs")):
    crate = f.relative_to(root).parts[1]
    if crate in skip or f.name == "tests.rs": continue
    text = f.read_text()
    m = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
    if m: text = text[:m.start()]
    n = sum(1 for l in text.splitlines() if l.strip() and not l.strip().startswith("//"))
    per[crate] = per.get(crate, 0) + n; total += n
for k, v in sorted(per.items()): print(f"{k:16} {v}")
print(f"{'total':16} {total}")
