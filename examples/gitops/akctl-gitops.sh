#!/usr/bin/env bash
# akctl-gitops.sh: run sandboxes from a Git repository, from any CI.
#
#   akctl-gitops.sh plan DIR    on a pull request: validate DIR, then show what
#                               merging it would change, as Markdown ready to
#                               post as a comment
#   akctl-gitops.sh apply DIR   on merge: make the controller run what DIR
#                               declares, delete what it no longer declares,
#                               and wait until every sandbox is Ready
#
# Environment:
#   AKCTL           path of the akctl binary (default: akctl on PATH)
#   AKCTL_ADDR      controller URL, read by akctl (default http://127.0.0.1:7474)
#   AKCTL_TOKEN     API token, read by akctl
#   APPLY_SET       apply set name (default: gitops); prune deletes only the
#                   sandboxes applied earlier with the same name
#   PLAN_FILE       where plan writes its Markdown (default: plan.md)
#   PLAN_MAX_BYTES  longest diff the plan file keeps (default: 60000; GitHub
#                   comments hold at most 65536 characters)
#   WAIT            how long apply waits for readiness (default: 5m)
#
# Exit codes of plan: 0 no changes, 1 changes, 2 invalid declarations or a
# wrong command line, 3 the plan could not be computed (controller
# unreachable, token refused, ...), others akctl's own (127: no akctl, 130:
# interrupted). The plan file is written in every case but a wrong command
# line, so that a failed plan still explains itself in the pull request;
# stdout gets the same Markdown, never cut.
# Exit codes of apply: akctl apply's own: 0 applied and Ready, 1 invalid
# declarations, refused request or failed wait, 2 wrong command line.
set -euo pipefail

AKCTL="${AKCTL:-akctl}"
APPLY_SET="${APPLY_SET:-gitops}"
PLAN_FILE="${PLAN_FILE:-plan.md}"
PLAN_MAX_BYTES="${PLAN_MAX_BYTES:-60000}"
WAIT="${WAIT:-5m}"

usage() {
	cat >&2 <<'EOF'
usage: akctl-gitops.sh plan DIR     validate DIR and write what applying it would change
                                    to $PLAN_FILE (default plan.md) and stdout;
                                    exit 0 no changes, 1 changes, 2+ errors
       akctl-gitops.sh apply DIR    apply DIR with --prune and wait until Ready

environment: AKCTL, AKCTL_ADDR, AKCTL_TOKEN, APPLY_SET (default gitops),
             PLAN_FILE, PLAN_MAX_BYTES, WAIT (default 5m)
EOF
	exit 2
}

# fence prints a Markdown code fence longer than any run of backticks in
# the file $1, so that a diff of a file holding ``` cannot end the block.
fence() {
	local f='```'
	while grep -qF -- "$f" "$1"; do
		f="$f"'`'
	done
	printf '%s' "$f"
}

# truncated copies the file $1, cut at a line boundary after at most $2
# bytes (0: no limit), and says so when it cut.
truncated() {
	LC_ALL=C awk -v max="$2" '
		{ n += length($0) + 1 }
		max > 0 && n > max { cut = 1; exit }
		{ print }
		END { if (cut) print "[... cut at " max " bytes: the CI log has the whole plan ...]" }
	' "$1"
}

# block writes a fenced block, with info string $1, of the file $2 cut at
# $3 bytes.
block() {
	local f
	f="$(fence "$2")"
	printf '%s%s\n' "$f" "$1"
	truncated "$2" "$3"
	printf '%s\n' "$f"
}

# render writes the plan as Markdown, diffs cut at $1 bytes (0: no limit).
# It reads dir, step, rc, out and err: what validate or diff said.
render() {
	local max="$1" creates updates prunes blocked
	# The first line marks the comment, so that a CI can find and update it.
	printf '<!-- akctl-gitops-plan: %s -->\n' "$APPLY_SET"
	printf '### akctl plan for `%s` (apply set `%s`)\n\n' "$dir" "$APPLY_SET"
	case "$rc" in
	0)
		printf 'No changes. The controller runs what `%s` declares.\n' "$dir"
		;;
	1)
		creates="$(grep -c '^+ create ' "$out" || true)"
		updates="$(grep -c '^~ update ' "$out" || true)"
		prunes="$(grep -c '^- prune ' "$out" || true)"
		blocked="$(grep -c '^! ' "$out" || true)"
		printf '**%s to create, %s to update, %s to prune' "$creates" "$updates" "$prunes"
		if [ "$blocked" -gt 0 ]; then
			printf ', %s that the controller could not run (marked `!`)' "$blocked"
		fi
		printf '.**\n\n'
		block diff "$out" "$max"
		;;
	invalid)
		printf '**Invalid declarations**: nothing can be applied until they are fixed.\n\n'
		block text "$err" "$max"
		return
		;;
	*)
		printf '**The plan could not be computed** (akctl %s exited %s).\n\n' "$step" "$rc"
		block text "$err" "$max"
		return
		;;
	esac
	if [ -s "$err" ]; then
		printf '\nakctl said:\n\n'
		block text "$err" "$max"
	fi
}

[ "$#" -eq 2 ] && [ -n "$2" ] || usage
mode="$1"
dir="$2"

case "$mode" in
plan) ;;
apply)
	exec "$AKCTL" apply -f "$dir" --prune --apply-set "$APPLY_SET" --wait --timeout "$WAIT"
	;;
*)
	usage
	;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT
out="$tmp/out"
err="$tmp/err"

# Invalid declarations fail the job here, every problem listed.
step=validate
rc=0
"$AKCTL" validate "$dir" >"$out" 2>"$err" || rc=$?
case "$rc" in
0)
	step=diff
	"$AKCTL" diff -f "$dir" --prune --apply-set "$APPLY_SET" >"$out" 2>"$err" || rc=$?
	code="$rc"
	;;
1)
	rc=invalid
	code=2
	;;
*) # a wrong command line (2), no akctl (127), ...
	code="$rc"
	;;
esac
cat "$err" >&2

render "$PLAN_MAX_BYTES" >"$PLAN_FILE"
render 0
echo "akctl-gitops: plan written to $PLAN_FILE" >&2
exit "$code"
