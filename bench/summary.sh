#!/usr/bin/env bash
# Last part of `make bench`: issue 17's table, each row with what this run
# measured, its target and met / not met, from .run/bench/results.json (the
# blocks bench/activation.sh, pipeline.sh, projector.sh and aggregates.sh
# wrote; a row whose script has not run says so). Each figure was measured
# beside its reference in its own script's run.
set -euo pipefail

BENCH_NAME=bench-summary
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RESULTS="$OUT/results.json"
[[ -s "$RESULTS" ]] || die "no $RESULTS: run make bench"

jq -r '
  def st: if . == true then "met" elif . == false then "not met" else . end;
  def missing($p; $t; $script): {path: $p, measured: "not measured (\($script) has not run)", target: $t, status: "-"};
  def run($b): " [\($b.run // "?"), \($b.commit // "?")]";
  ( if .activation.targets then .activation.targets | map(. + {measured: (.measured + run($root.activation))})
    else [missing("POST /v1/validate"; ">= 20,000 req/s at p99 <= 5 ms, >= 0.6 x host check"; "bench/activation.sh"),
          missing("POST /v1/activations"; ">= 800 /s at p99 <= 100 ms"; "bench/activation.sh")] end
  ) as $act
  | ( if .pipeline then .pipeline as $p
      | [{path: "IssueLicense over HTTP / pgbench insert, \($p.pgbench.clients) clients",
          measured: ("\($p.http_issue.throughput_per_s) / \($p.pgbench.tps | round) = \($p.ratio_http_to_pgbench)" + run($p)),
          target: $p.targets.ratio.target, status: ($p.targets.ratio.met | st)},
         {path: "commit -> projector row at a steady \($p.steady_rate.http.target_rate_per_s) cmd/s",
          measured: ("achieved \($p.steady_rate.http.achieved_rate_per_s) cmd/s, p99 \($p.steady_rate.commit_to_projector_row.p99_ms) ms" + run($p)),
          target: "sustained, p99 <= 200 ms",
          status: (($p.targets.sustained.met and $p.targets.commit_to_row_p99.met) | st)}]
    else [missing("IssueLicense / pgbench"; ">= 0.3"; "bench/pipeline.sh"),
          missing("commit -> projector row at 500 cmd/s"; "p99 <= 200 ms"; "bench/pipeline.sh")] end
  ) as $pipe
  | ( if .projector.rebuild then .projector as $p
      | [{path: "projector rebuild, \($p.live.events) events, both models",
          measured: ("\($p.rebuild.events_per_s_wall) events/s (\($p.rebuild.status))" + run($p)),
          target: ">= 100,000 events/s", status: ($p.rebuild.target.met | st)},
         {path: "as-of state of a license with \($p.seed.hot.events // "10,000") events",
          measured: ("worst p99 \($p.as_of.target.worst_p99_ms) ms (" + ([$p.as_of.runs[] | "\(.kind) c\(.connections) \(.p99_ms)"] | join(", ")) + ")" + run($p)),
          target: "p99 <= \($p.as_of.target.p99_ms) ms", status: ($p.as_of.target.met | st)}]
    else [missing("projector rebuild"; ">= 100,000 events/s"; "bench/projector.sh"),
          missing("as-of of a 10,000-event license"; "p99 <= 20 ms"; "bench/projector.sh")] end
  ) as $proj
  | ( if .aggregates.target then [.aggregates.target | . + {measured: (.measured + run($root.aggregates))}]
      else [missing("a command on a 10,000-event aggregate"; "within 1.2 x fresh"; "bench/aggregates.sh")] end
  ) as $agg
  | ($act + $pipe + $proj + $agg) as $rows
  | "",
    "Issue 17 — performance targets (from \(input_filename // ".run/bench/results.json"))",
    "",
    ($rows[] | "  \(.path)\n      measured: \(.measured)\n      target:   \(.target)   -> \(.status)"),
    "",
    "  met: \([$rows[] | select(.status == "met")] | length) of \([$rows[] | select(.status != "reference")] | length)"
' --argjson root "$(cat "$RESULTS")" "$RESULTS"
