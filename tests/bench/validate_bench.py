"""How long `gateway validate` takes on a large config, end to end.

Generates 1,000 workflow files (parameters of every type, 3-6 steps, several templates, one
custom event in five files, record actions on a few data types) into a temporary folder, checks
that they validate clean, then times `python -m gateway validate <folder>` as a subprocess,
best of three. The target is under 3 seconds.

    python tests/bench/validate_bench.py [--files N] [--runs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 3.0
PARAM_TYPES = ("text", "number", "integer", "boolean", "date", "object", "customer")
TYPES = """\
kind: data_type
name: customer
fields:
  email: {type: text, unique: true}
  name: {type: text}
  score: {type: number, default: 0}
  tags: {type: text, list: true}
---
kind: data_type
name: order
fields:
  customer: {type: customer}
  total: {type: number}
  paid: {type: boolean, default: false}
  placed_at: {type: date}
---
kind: settings
secrets: [API_KEY]
"""


def _params(rng: random.Random) -> tuple[str, list[str]]:
    names = [f"p{i}" for i in range(rng.randint(2, 5))]
    lines = ["params:", "  email: {type: text}"]
    for name in names:
        kind = rng.choice(PARAM_TYPES)
        extra = ", list: true, optional: true" if rng.random() < 0.2 else ""
        lines.append(f"  {name}: {{type: {kind}{extra}}}")
    return "\n".join(lines), names


def _event(index: int) -> str:
    return f"""\
kind: custom_event
name: enrich-{index}
params:
  email: {{type: text}}
  weight: {{type: number, optional: true, default: 1}}
returns:
  email: {{type: text}}
  score: {{type: number}}
steps:
  - id: clean
    action: set
    values:
      email: "{{{{ params.email | trim | lower }}}}"
      domain: "{{{{ params.email.split('@')[-1] }}}}"
  - action: log
    level: debug
    message: "enriching {{{{ steps.clean.email }}}} in run {{{{ run.id }}}} ({index})"
  - action: return_data
    data:
      email: "{{{{ steps.clean.email }}}}"
      score: "{{{{ params.weight * {index % 10 + 1} }}}}"
"""


def _steps(rng: random.Random, index: int, names: list[str], event: bool) -> str:
    steps = [f"""\
  - id: input
    action: set
    values:
      email: "{{{{ params.email | lower }}}}"
      summary: "#{index}: {{{{ params.{names[0]} }}}} and {{{{ params.{names[-1]} }}}}"
      later: "{{{{ now + minutes({index % 60}) }}}}\""""]
    if event:
        steps.append(f"""\
  - id: enriched
    action: trigger_event
    event: enrich-{index}
    params: {{email: "{{{{ steps.input.email }}}}", weight: 2}}""")
    for number in range(rng.randint(1, 3 if event else 4)):
        # Step ids are unique within a workflow.
        steps.append(rng.choice([
            """\
  - action: log
    message: "{{ steps.input.summary }} for {{ request.method }} ({index})"
    only_when: "{{ params.email }}\"""",
            """\
  - id: found_{number}
    action: search
    type: customer
    constraints:
      - {key: score, constraint: greater_than, value: "{{ {index} % 7 }}"}
    sort: [{key: created_at, descending: true}]
    limit: 5""",
            """\
  - action: create_thing
    type: order
    fields: {total: 10, paid: "{{ params.email != '' }}", placed_at: "{{ now }}"}""",
            """\
  - action: fail
    only_when: "{{ not params.email }}"
    status: 422
    code: NO_EMAIL
    message: "no email for {{ run.workflow }} ({index})\"""",
        ]).replace("{number}", str(number)).replace("{index}", str(index)))
    steps.append("""\
  - action: return_data
    status: 201
    data:
      email: "{{ steps.input.email }}"
      at: "{{ steps.input.later }}\"""")
    return "\n".join(steps)


def _workflow(rng: random.Random, index: int) -> str:
    event = index % 5 == 0
    params, names = _params(rng)
    text = f"""\
kind: api_workflow
name: workflow-{index}
label: Generated workflow {index}
expose: {"true" if index % 3 else "false"}
auth: {rng.choice(["none", "user", "admin"])}
{params}
steps:
{_steps(rng, index, names, event)}
"""
    return text + ("---\n" + _event(index) if event else "")


def generate(folder: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "types.yaml").write_text(TYPES)
    for index in range(count - 1):
        (folder / f"workflow-{index:04d}.yaml").write_text(_workflow(rng, index))


def _validate(folder: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "gateway", "validate", str(folder)],
                             capture_output=True, text=True, check=False)
    return time.perf_counter() - start, process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "workflows.d"
        generate(folder, args.files)
        seconds, process = _validate(folder)
        if process.returncode != 0:
            print(process.stdout[-2000:], process.stderr[-2000:], sep="\n")
            print("the generated config does not validate clean", file=sys.stderr)
            return 1
        times = [seconds] + [_validate(folder)[0] for _ in range(args.runs - 1)]
    best = min(times)
    verdict = "within" if best < TARGET_SECONDS else "OVER"
    print(f"gateway validate, {args.files} files: best of {len(times)} = {best:.2f} s "
          f"({verdict} the {TARGET_SECONDS:.0f} s target; runs: "
          + ", ".join(f"{t:.2f}" for t in times) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
