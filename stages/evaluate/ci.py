"""A sweep's v2m.report as a CI page shows it: a Markdown table (a job summary, a PR comment) and JUnit XML
(each gate a test case, so CI test views list the failed gates by name).

Both are pure functions of the report's payload, so they can be re-rendered from a saved report.
"""

from __future__ import annotations

from xml.etree import ElementTree


def _num(value, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown(data: dict, title: str = "v2m sweep") -> str:
    """The sweep's rows as a GitHub-flavoured Markdown table, failed gates in bold, a verdict line at the end."""
    m = data["metrics"]
    lines = [f"### {title}: {data['labels'].get('model', '')} — float NLL {_num(m.get('nll'), '.4f')} on "
             f"{data['labels'].get('scored', '')}", "",
             "| row | scheme | method | kernel | size vs float | NLL Δ % | KL vs float | decode speed vs float | gates |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        r, labels = row["metrics"], row["labels"]
        nll = None if r.get("nll_delta") is None else 100 * r["nll_delta"]
        gates = "<br>".join(f"❌ **{g['gate']}** ({g['detail']})" if g["failed"] else f"✅ {g['gate']}"
                            for g in row["gates"]) or "—"
        lines.append(f"| {row['name']} | {labels.get('group', labels.get('scheme', ''))} | {labels.get('method', '')} | "
                     f"{labels.get('kernel', '')} | {_num(r.get('size_ratio'), '.3f', '×')} | {_num(nll, '+.2f')} | "
                     f"{_num(r.get('kl'), '.4f')} | {_num(r.get('decode_speedup'), '.2f', '×')} | {gates} |")
    for failure in data.get("failures") or []:
        lines.append(f"| {failure['name']} | | | | | | | | ❌ **error**: {failure['error']} |")
    failed = [g["gate"] for g in data["gates"] if g["failed"]]
    errors = [f["name"] for f in data.get("failures") or []]
    total = len(data["rows"]) + len(errors)
    passed = sum(1 for row in data["rows"] if not any(g["failed"] for g in row["gates"]))
    verdict = f"**{passed} of {total} rows passed**"
    if failed:
        verdict += "; failed gates: " + ", ".join(f"`{g}`" for g in failed)
    if errors:
        verdict += "; rows that could not run: " + ", ".join(errors)
    return "\n".join(lines + ["", verdict, ""])


def junit(data: dict, suite: str = "v2m sweep") -> str:
    """JUnit XML: one test case per gate (class = the row), a failure element for a failed gate, an error element
    for a row that could not run, and a passing case for a row without gates."""
    cases = []
    for row in data["rows"]:
        seconds = row["metrics"].get("quantize_s") or 0.0
        for gate in row["gates"] or [{"gate": "runs", "failed": False, "detail": "no gates"}]:
            case = ElementTree.Element("testcase", classname=f"sweep.{row['name']}", name=gate["gate"],
                                       time=f"{seconds / max(1, len(row['gates'])):.3f}")
            if gate["failed"]:
                failure = ElementTree.SubElement(case, "failure", message=f"{gate['gate']}: {gate['detail']}",
                                                 type="GateFailed")
                failure.text = f"row {row['name']}: gate {gate['gate']} failed ({gate['detail']})"
            cases.append(case)
    for failure in data.get("failures") or []:
        case = ElementTree.Element("testcase", classname=f"sweep.{failure['name']}", name="quantize and evaluate")
        ElementTree.SubElement(case, "error", message=failure["error"], type="V2MError").text = failure["error"]
        cases.append(case)
    suite_el = ElementTree.Element("testsuite", name=suite, tests=str(len(cases)),
                                   failures=str(sum(1 for c in cases if c.find("failure") is not None)),
                                   errors=str(sum(1 for c in cases if c.find("error") is not None)))
    suite_el.extend(cases)
    root = ElementTree.Element("testsuites")
    root.append(suite_el)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
