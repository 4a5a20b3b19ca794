"""Every citation in the shipped text resolves inside the repository.

(a) Each citation of the reference post's equations ("post eq. (8)", "post eqs. 6–8", "the post's eq. (3)", "its
    eq. 8" after a mention of the post, …) names an equation that docs/derivation.md defines, by its \\tag{N} and
    its id="eq-N" anchor. A range "6–8" cites its two ends (the post labels no equation 7).
(b) Each repository path named in the text (docs/…, minidiff/…, benchmarks/…, figures/…, tests/… ending in .md,
    .py, .png, .json or .sh) exists. Globs and templates ({name}, *, NAME) are skipped.
(c) No shipped file points outside the repository: not to the post's original location, not to planning notes.

Each failure names file:line and the offending text. The checkers take the repository root as an argument, so the
last tests run them on a small synthetic tree and check that they report what they should.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DERIVATION = "docs/derivation.md"
POST_LABELS = ("1", "2", "3", "6", "8")  # the equation numbers the post itself labels

# --- the shipped text -----------------------------------------------------------------------------------------

SKIP_DIRS = {"__pycache__", "node_modules"}


def _walk(folder, pattern):
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(pattern)
            if p.is_file() and not any(part in SKIP_DIRS or part.startswith(".")
                                       for part in p.relative_to(folder).parts)]


def shipped_files(root):
    """Every *.py under minidiff/, tests/, benchmarks/; cli.py and setup.py; *.md in the root, docs/, minidiff/."""
    root = pathlib.Path(root)
    files = []
    for folder in ("minidiff", "tests", "benchmarks"):
        files += _walk(root / folder, "*.py")
    files += [root / name for name in ("cli.py", "setup.py") if (root / name).is_file()]
    files += sorted(p for p in root.glob("*.md") if p.is_file())
    files += _walk(root / "docs", "*.md") + _walk(root / "minidiff", "*.md")
    return sorted(set(files))


def shipped_lines(root):
    """(relative path, 1-based line number, line) over every shipped file."""
    root = pathlib.Path(root)
    for path in shipped_files(root):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            yield rel, number, line


# --- (a) equations ----------------------------------------------------------------------------------------------

_NUM = r"\(?\s*\d+(?:\.\d+)?[a-z]?\s*\)?(?![\w.]*\d)"
_SEP = r"\s*(?:–|—|-|to|and|,|&)\s*"
NUM_LIST = rf"{_NUM}(?:{_SEP}{_NUM})*"
# A direct citation: "post eq. (8)", "post eqs. 6–8", "the post's eq. (3)", "the post's eq. after (N)", and the
# same with docs/derivation.md as the source ("derivation.md, eq. (8b)").
DIRECT = re.compile(rf"(?:\bpost(?:'s|’s)?|\bderivation(?:\.md)?(?:,|'s)?)\s+eqs?\.?\s*(?:(?:after|before)\s+)?"
                    rf"(?P<nums>{NUM_LIST})", re.IGNORECASE)
# An indirect one: "eq. (8)" whose nearest source named before it, on this line or the one above, is the post,
# and which no other source follows ("eq. (7) of Bishop 2006").
ANY_EQ = re.compile(rf"\beqs?\.?\s*(?:(?:after|before)\s+)?(?P<nums>{NUM_LIST})", re.IGNORECASE)
POST_MENTION = re.compile(r"\b(?:the|reference|its|this)\s+post(?![\w-])|\bpost(?:'s|’s)|\bpost\s+eqs?\b",
                          re.IGNORECASE)
OTHER_SOURCE = re.compile(r"\b(?:1[89]|20)\d\d[a-z]?\b|\bet al\b|\bPRML\b")
OTHER_SOURCE_AFTER = re.compile(r"\s*,?\s*(?:of|in|from)\s+(?!the post\b)(?:the\s+)?[A-Z]")


def equation_numbers(spec):
    """The numbers a citation's number list names: both ends of a range, every item of a list."""
    return re.findall(r"\d+(?:\.\d+)?[a-z]?", spec)


def post_citations(lines):
    """(path, line, cited text, [numbers]) for every citation of the post's equations in (path, line, text)."""
    found = []
    previous = {}
    for path, number, line in lines:
        before = previous.get(path, "")
        previous[path] = line
        spans = []
        for m in DIRECT.finditer(line):
            spans.append(m.span())
            found.append((path, number, _trim(m.group(0)), equation_numbers(m.group("nums"))))
        for m in ANY_EQ.finditer(line):
            if any(a <= m.start() < b for a, b in spans):
                continue
            window = before + "\n" + line[:m.start()]
            mentions = list(POST_MENTION.finditer(window))
            if (mentions and not OTHER_SOURCE.search(window[mentions[-1].end():])
                    and not OTHER_SOURCE_AFTER.match(line, m.end())):
                found.append((path, number, _trim(m.group(0)), equation_numbers(m.group("nums"))))
    return found


def _trim(text):
    """The citation without the closing parenthesis of the text around it: "(post eq. 3)" → "post eq. 3"."""
    text = text.rstrip()
    return text[:-1].rstrip() if text.endswith(")") and text.count(")") > text.count("(") else text


TAG = re.compile(r"\\tag\{\s*([0-9]+[a-z]?)\s*\}")
ANCHOR = re.compile(r"""id=["']eq-([0-9]+[a-z]?)["']""")


def derivation_equations(root):
    """({number: line} of the \\tag{N}s, {number: line} of the id="eq-N" anchors) in docs/derivation.md."""
    tags, anchors = {}, {}
    path = pathlib.Path(root) / DERIVATION
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for m in TAG.finditer(line):
                tags.setdefault(m.group(1), number)
            for m in ANCHOR.finditer(line):
                anchors.setdefault(m.group(1), number)
    return tags, anchors


def unresolved_equations(root):
    """'file:line: text' for each post citation naming a number that derivation.md lacks (as tag and anchor)."""
    tags, anchors = derivation_equations(root)
    defined = set(tags) & set(anchors)
    problems = []
    for path, number, text, numbers in post_citations(shipped_lines(root)):
        missing = [n for n in numbers if n not in defined]
        if missing:
            problems.append(f"{path}:{number}: {text!r} cites eq. {', '.join(missing)}, which {DERIVATION} "
                            f"does not define (it defines {', '.join(sorted(defined, key=_eq_key)) or 'none'})")
    return problems


def _eq_key(n):
    m = re.match(r"(\d+)(.*)", n)
    return (int(m.group(1)), m.group(2))


# --- (b) paths ------------------------------------------------------------------------------------------------------

PATH = re.compile(r"(?<![\w./-])(?:\.\./)*(?P<path>(?:docs|minidiff|benchmarks|figures|tests)/[\w./{}*<>-]*)")
EXTENSION = re.compile(r"\.(?:md|py|png|json|sh)$")
TEMPLATE = re.compile(r"[{}*<>]|NAME")


def cited_paths(lines):
    """(path, line, cited path) for every repository path named in the text; a leading ../ is dropped."""
    found = []
    for path, number, line in lines:
        for m in PATH.finditer(line):
            cited = m.group("path").rstrip(".")
            if TEMPLATE.search(cited) or not EXTENSION.search(cited):
                continue
            found.append((path, number, cited))
    return found


def missing_paths(root):
    root = pathlib.Path(root)
    return [f"{path}:{number}: {cited!r} does not exist in the repository"
            for path, number, cited in cited_paths(shipped_lines(root)) if not (root / cited).exists()]


# --- (c) pointers outside the repository ------------------------------------------------------------------------
# Written in pieces so that this file does not contain the strings it looks for.
OUTSIDE = [re.compile(p) for p in (
    re.escape("../" + "shared"), re.escape("shared/" + "seed"), re.escape("/" + "work/"),
    r"\b" + "DES" + r"IGN\b",         # the planning notes, with or without ".md"
    r"\b" + "REFER" + r"ENCE\b",      # (REFERENCE_T, a constant, does not match: "_" continues the word)
    r"\b" + "STY" + r"LE\.md\b", r"\b" + "STY" + r"LE rules?\b",
)]


def outside_pointers(root):
    problems = []
    for path, number, line in shipped_lines(root):
        for pattern in OUTSIDE:
            m = pattern.search(line)
            if m:
                problems.append(f"{path}:{number}: points outside the repository ({m.group(0)!r}): {line.strip()}")
    return problems


# --- the checks on this repository --------------------------------------------------------------------------------

def test_derivation_numbers_the_posts_equations():
    tags, anchors = derivation_equations(ROOT)
    problems = [f"{DERIVATION}: the post's eq. ({n}) has no \\tag{{{n}}}" for n in POST_LABELS if n not in tags]
    problems += [f"{DERIVATION}:{line}: \\tag{{{n}}} has no id=\"eq-{n}\" anchor" for n, line in tags.items()
                 if n not in anchors]
    problems += [f"{DERIVATION}:{line}: id=\"eq-{n}\" anchors no \\tag{{{n}}}" for n, line in anchors.items()
                 if n not in tags]
    added = [n for n in tags if n not in POST_LABELS and n.isdigit()]
    problems += [f"{DERIVATION}:{tags[n]}: \\tag{{{n}}} is a bare number the post does not use; give an added "
                 f"equation a letter (e.g. {n}a) or no number" for n in added]
    assert not problems, "\n".join(problems)


def test_every_post_equation_cited_is_in_the_derivation():
    problems = unresolved_equations(ROOT)
    assert not problems, "\n".join(problems)


def test_every_cited_repository_path_exists():
    problems = missing_paths(ROOT)
    assert not problems, "\n".join(problems)


def test_no_shipped_file_points_outside_the_repository():
    problems = outside_pointers(ROOT)
    assert not problems, "\n".join(problems)


def test_the_checks_see_the_code_citations():
    """The walk reaches the code, and the citation forms in use today are recognised."""
    files = {p.relative_to(ROOT).as_posix() for p in shipped_files(ROOT)}
    assert {"minidiff/forward.py", "cli.py", "README.md", DERIVATION, "tests/test_citations.py"} <= files
    cited = {n for *_, numbers in post_citations(shipped_lines(ROOT)) for n in numbers}
    assert {"3", "6", "8"} <= cited


# --- the checkers themselves, on a synthetic tree -------------------------------------------------------------------

def _plain(text):
    return text.replace("~", ".").replace("%", "/")


def _tree(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / _plain(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_plain(text), encoding="utf-8")
    return tmp_path


def _derivation(*numbers):
    return "".join(f'<a id="eq-{n}"></a>**({n})**\n\n$$\nx = {n} \\tag{{{n}}}\n$$\n\n' for n in numbers)


def test_a_lost_equation_is_reported(tmp_path):
    """If derivation.md loses an equation that the code cites, the citation check names the file and line."""
    code = "x = 1\nmean = a * x0 + b * x_t  # post eq. (8)\n"
    root = _tree(tmp_path, {DERIVATION: _derivation("1", "2", "3", "6", "8"), "minidiff/forward.py": code})
    assert unresolved_equations(root) == []
    _tree(tmp_path, {DERIVATION: _derivation("1", "2", "3", "6")})
    problems = unresolved_equations(root)
    assert len(problems) == 1 and problems[0].startswith("minidiff/forward.py:2:") and "eq. 8" in problems[0]


# The synthetic files are written with "~" for "." and "%" for "/", so that this file itself cites no missing
# equation or path; _tree puts them back.
CODE = "minidiff%m~py"


def test_every_citation_form_is_checked(tmp_path):
    lines = [
        "a  # post eq~ (8)",                                   # 1
        "b  (post eqs~ (6)–(8))",                              # 2: a range cites both ends
        "c  post eqs~ 6–8 and post eqs~ 2-3",                  # 3: en dash and hyphen
        "d  (post eq~ 3; Ho et al~ 2020, eq~ 5)",              # 4: Ho's equation 5 is not the post's
        "e  the post's eq~ (4)",                               # 5
        "f  The post derives eq~ (9) this way: one",           # 6: indirect
        "g  step after another, so check eq~ (8a) here~",      # 7: indirect, across the line break
        "h  Song et al~ 2021, eq~ (13); Karras et al~ 2022, eq~ 5",  # 8: not the post
        "i  cited as 'post eq~ (n)'",                          # 9: a placeholder, not a number
        "j  the posterior eq~ (7) of Bishop 2006",             # 10: another source follows
        "k  docs%derivation~md, eq~ (8b)",                     # 11: the derivation as the source
    ]
    root = _tree(tmp_path, {DERIVATION: _derivation("1", "2", "3", "6", "8", "8a"), CODE: "\n".join(lines)})
    code = _plain(CODE)
    cited = [(number, numbers) for path, number, _, numbers in post_citations(shipped_lines(root)) if path == code]
    assert cited == [(1, ["8"]), (2, ["6", "8"]), (3, ["6", "8"]), (3, ["2", "3"]), (4, ["3"]), (5, ["4"]),
                     (6, ["9"]), (7, ["8a"]), (11, ["8b"])]
    problems = unresolved_equations(root)
    assert [p.split(": ")[0] for p in problems] == [f"{code}:5", f"{code}:6", f"{code}:11"]


def test_missing_paths_and_outside_pointers_are_reported(tmp_path):
    text = ("See `docs%study~md`, docs%nowhere~md and ![x](~~%figures%forward~png)~\n"
            "Templates are skipped: figures%{name}~png, figures%data%*~json, figures%NAME~png~\n"
            "From ~~%shared%x~md and the DES" + "IGN notes~\n")
    root = _tree(tmp_path, {"README~md": text, "docs%study~md": "", "figures%forward~png": "",
                            DERIVATION: _derivation(*POST_LABELS)})
    assert missing_paths(root) == [f"README.md:1: {_plain('docs%nowhere~md')!r} does not exist in the repository"]
    assert [p.split(": ")[0] for p in outside_pointers(root)] == ["README.md:3", "README.md:3"]
    assert outside_pointers(_tree(tmp_path, {"README~md": "REFERENCE_T = 1000; STYLE = {}\n"})) == []
