#!/usr/bin/env python3
"""Regenerates the configuration table in README.md from src/config/defaults.toml.

Each row: key, environment variable, default, and the comment above the key.
Run after changing defaults.toml; a test checks that every key is in README.md.
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
rows, section, comment = [], "", []
for line in (root / "src/config/defaults.toml").read_text().splitlines():
    if line.startswith("#"):
        comment.append(line.lstrip("# ").strip())
        continue
    if not line.strip():
        comment = []
        continue
    if m := re.match(r"\[(.+)\]", line):
        section, comment = m.group(1), []
        continue
    if m := re.match(r"(\w+)\s*=\s*(.+)", line):
        key = f"{section}.{m.group(1)}" if section else m.group(1)
        env = "`CALLGATE__" + key.upper().replace(".", "__") + "`"
        if key == "auth.jwt_secret":
            env += " or `CALLGATE_JWT_SECRET`"
        if key == "store.mongodb.uri":
            env += " or `CALLGATE_MONGODB_URI`"
        if key == "auth.external.secret":
            env += " or `CALLGATE_EXTERNAL_JWT_SECRET`"
        if key == "jitsi.app_secret":
            env += " or `CALLGATE_JITSI_APP_SECRET`"
        if key == "cluster.redis_url":
            env += " or `CALLGATE_REDIS_URL`"
        default = m.group(2).replace("|", "\\|")
        rows.append(f"| `{key}` | {env} | `{default}` | {' '.join(comment)} |")
        comment = []
table = "| key | environment variable | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
readme = (root / "README.md").read_text()
start = readme.index("| key | environment variable | default | meaning |")
end = readme.index("\n\n", start) + 1
(root / "README.md").write_text(readme[:start] + table + readme[end:])
print(f"README.md: {len(rows)} configuration keys", file=sys.stderr)
