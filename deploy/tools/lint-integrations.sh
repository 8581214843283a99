#!/usr/bin/env bash
# lint-integrations.sh validates the pipeline integrations with the platforms'
# own parsers, installed from npm at pinned versions into a cache keyed by
# version (~1 min cold, from the npm registry, building one native module):
#
#   GitHub: deploy/integrations/github-action/action.yml with @actions/workflow-parser
#           (GitHub's action.yml and workflow parser, from actions/languageservices),
#           plus the example workflow that uses it;
#   GitLab: deploy/integrations/gitlab/ciss.gitlab-ci.yml, included by a pipeline,
#           with gitlab-ci-local, which validates against GitLab's CI JSON schema.
#
# Each check is also run on a broken copy, so a validator that accepts
# anything fails the script. The Tekton Task is validated in Go (test/lint).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CISS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ciss}/npm/workflow-parser-0.3.61-gitlab-ci-local-4.60.1"
if [ ! -f "$cache/.complete" ]; then
  rm -rf "$cache"
  mkdir -p "$cache"
  # gitlab-ci-local 4.60.1 is the newest that runs on Node 20 (later ones need Node 22).
  # Its dependency re2 is native: its prebuilt download and node-gyp's header
  # download both need the internet, so build it against the headers Debian's
  # nodejs ships in /usr/include/node (gcc, offline).
  if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then
    export npm_config_nodedir=/usr
  fi
  npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
    @actions/workflow-parser@0.3.61 gitlab-ci-local@4.60.1 >&2
  touch "$cache/.complete"
fi

integrations="$root/deploy/integrations"
CISS_NPM="$cache" node "$root/deploy/tools/lint-github-action.mjs" \
  "$integrations/github-action/action.yml" "$integrations/github-action/example-workflow.yml"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gitlab() { # gitlab <template> <dir>: validate a pipeline that includes the template
  mkdir -p "$2"
  cp "$1" "$2/ciss.gitlab-ci.yml"
  cat > "$2/.gitlab-ci.yml" <<'YAML'
include:
  - local: ciss.gitlab-ci.yml
stages: [test]
ciss-scan:
  extends: .ciss-image-scan
  variables:
    CISS_IMAGE_REF: registry.example.com/app@sha256:9a3b0f7f6f4a6a0c8f3f4b6c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e
YAML
  (
    cd "$2"
    git init -q
    git remote add origin https://gitlab.example.com/platform/app.git
    git add -A
    git -c user.email=ci@ciss.dev -c user.name=ci commit -qm lint
    node "$cache/node_modules/gitlab-ci-local/src/index.js" --list --json-schema-validation=true
  ) > "$2.log" 2>&1
}
template="$integrations/gitlab/ciss.gitlab-ci.yml"
if ! gitlab "$template" "$work/good"; then
  echo "gitlab: $template does not validate:" >&2
  cat "$work/good.log" >&2
  exit 1
fi
sed 's/^    reports:/    reportz:/' "$template" > "$work/broken.yml"
if gitlab "$work/broken.yml" "$work/broken"; then
  echo "gitlab: the schema check accepted a broken template; the validator is not working" >&2
  exit 1
fi
echo "gitlab: $template valid (GitLab CI JSON schema, gitlab-ci-local 4.60.1)"
