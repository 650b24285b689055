#!/usr/bin/env python3
"""Extracts the recorded Scaleway traffic the conformance tests replay
(tests/tests/scw_conformance.rs) from the cassettes of Scaleway's own CLI
and Terraform provider.

    extract.py CLI_GIT_DIR TERRAFORM_GIT_DIR

Each output file names the repository, commit and cassette it came from.
Access-key-shaped strings become @ACCESS_KEY@ (the tests put a key-shaped
value built at compile time in its place); everything else is as recorded.
"""
import json, os, re, subprocess, sys
from urllib.parse import urlsplit, parse_qsl

import yaml

CLI = "scaleway/scaleway-cli"
TF = "scaleway/terraform-provider-scaleway"
T = "internal/services/{}/testdata/{}.cassette.yaml"
C = "internal/namespaces/instance/v1/testdata/{}.cassette.yaml"

# (file, repository, cassette, interaction ids)
SPEC = [
    ("instance_server_lifecycle", TF, T.format("instance", "server-root-volume-from-image-block"),
     [3, 4, 5, 13, 14, 15, 63, 64, 67, 69, 70]),
    ("instance_products_servers", TF, T.format("instance", "server-root-volume-from-image-block"),
     [0, 1, 2]),
    ("instance_server_delete", CLI, C.format("test-create-server-ips-explicit-new-ip"), [8]),
    ("instance_servers_list", TF, T.format("instance", "data-source-servers-basic"), [51]),
    ("instance_user_data", TF, T.format("instance", "user-data-basic"), [14, 17, 18, 29]),
    ("instance_user_data_missing", CLI, C.format("test-user-data-get-get-an-nonexistent-key"), [5]),
    ("instance_images", TF, T.format("instance", "image-basic"), [8, 9, 12, 42, 43, 44]),
    ("instance_images_list", TF, T.format("instance", "action-server-backup"), [43]),
    ("instance_security_groups", TF, T.format("instance", "security-group-basic"), [0, 3, 4, 36, 37]),
    ("instance_security_groups_list", TF, T.format("instance", "data-source-servers-basic"), [115]),
    ("block_snapshots", TF, T.format("block", "snapshot-basic"), [4, 5, 8, 12, 13, 16, 17]),
    ("block_snapshots_list", TF, T.format("block", "data-source-snapshot-basic"), [8]),
    ("block_volumes_list", TF, T.format("block", "list-block-volumes-with-tags"), [14]),
    ("iam_api_keys", TF, T.format("iam", "api-key-expires"), [0, 2, 3, 9, 10, 11]),
    ("iam_api_keys_list", TF, T.format("iam", "list-iamapi-keys-basic"), [14]),
    ("iam_applications_list", TF, T.format("iam", "list-iam-applications-basic"), [18]),
    ("iam_policies", TF, T.format("iam", "policy-basic"), [2, 21]),
    ("iam_policies_list", TF, T.format("iam", "list-iam-policies-basic"), [18, 19]),
    ("error_invalid_arguments", CLI,
     C.format("test-server-update-no-initial-placement-group&-placement-group-id=invalid-pg-id"), [6]),
    ("error_permissions_denied", TF, T.format("instance", "action-instance-create-snapshot-sbs"), [19]),
    ("error_transient_state", TF, T.format("iam", "group-membership-basic"), [15]),
    ("error_rate_limited", TF, T.format("block", "list-block-snapshots-basic"), [182]),
]

KEEP_HEADERS = {"content-type", "x-total-count", "link", "retry-after", "x-envoy-ratelimited", "location"}
KEY = re.compile(r"SCW[A-Z0-9]{17}")


def scrub(text):
    return KEY.sub("@ACCESS_KEY@", text)


def body(text, content_type):
    if text is None or text == "":
        return None if text is None else ""
    text = scrub(text)
    if "json" in (content_type or "") or text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def first(headers, name):
    for k, v in (headers or {}).items():
        if k.lower() == name:
            return v[0] if isinstance(v, list) else v
    return None


def interaction(it):
    rq, rs = it["request"], it["response"]
    url = urlsplit(scrub(rq["url"]))
    req_ct = first(rq.get("headers"), "content-type")
    resp_headers = {k: (v[0] if isinstance(v, list) else v)
                    for k, v in (rs.get("headers") or {}).items() if k.lower() in KEEP_HEADERS}
    return {
        "id": it["id"],
        "request": {
            "method": rq["method"],
            "path": url.path,
            "query": parse_qsl(url.query, keep_blank_values=True),
            "content_type": req_ct,
            "body": body(rq.get("body"), req_ct),
        },
        "response": {
            "status": rs["code"],
            "headers": resp_headers,
            "body": body(rs.get("body"), first(rs.get("headers"), "content-type")),
        },
    }


def main():
    dirs = {CLI: sys.argv[1], TF: sys.argv[2]}
    out = os.path.dirname(os.path.abspath(__file__))
    for name, repo, cassette, ids in SPEC:
        git = ["git", "--git-dir", dirs[repo]]
        commit = subprocess.check_output(git + ["rev-parse", "HEAD"], text=True).strip()
        data = yaml.safe_load(subprocess.check_output(git + ["show", f"HEAD:{cassette}"]))
        by_id = {it.get("id"): it for it in data["interactions"]}
        doc = {
            "source": {"repository": repo, "commit": commit, "cassette": cassette},
            "interactions": [interaction(by_id[i]) for i in ids],
        }
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")


if __name__ == "__main__":
    main()
