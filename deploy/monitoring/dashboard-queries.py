#!/usr/bin/env python3
"""Print the Grafana dashboard's queries as a Prometheus rule file, so that `promtool check
rules` parses every panel's PromQL (make lint). Usage: dashboard-queries.py DASHBOARD.json"""
import json
import sys

dash = json.load(open(sys.argv[1]))
rules = []
for panel in dash["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
        rules.append({"record": "samsyn:dashboard_panel_%d_%s" % (panel["id"], target["refId"].lower()), "expr": expr})
if not rules:
    sys.exit("no queries in " + sys.argv[1])
# JSON is YAML: promtool reads it as a rule file.
print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
