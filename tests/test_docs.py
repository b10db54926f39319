"""The Markdown pages point at what exists: every relative link resolves, and every command README.md
shows in a ```bash block names files and flags that exist (train.py commands run with --print_config,
which resolves the whole config and exits without touching data or writing a run).

The two helpers that read Markdown are plain functions with their own tests on synthetic text, so a
README naming a missing file can be seen to fail.
"""
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Markdown links, [text](target) and ![alt](target); the target stops at whitespace (a title may follow).
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?[^)]*\)')
FENCE = re.compile(r'^\s*(```+|~~~+)\s*([\w+-]*)')

def markdown_files():
    """The repository's tracked Markdown files, paths relative to ROOT (runs/ holds outputs, not docs)."""
    out = subprocess.run(['git', 'ls-files', '*.md'], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return [p for p in out.split() if not p.startswith(('runs/', '.venv/'))]


def blocks(markdown):
    """(language, text) of each part of the page: language None outside fenced blocks."""
    parts, lines, language = [], [], None
    for line in markdown.splitlines():
        fence = FENCE.match(line)
        if fence:
            parts.append((language, '\n'.join(lines)))
            lines, language = [], (None if language is not None else fence.group(2) or '')
            continue
        lines.append(line)
    parts.append((language, '\n'.join(lines)))
    return parts


def relative_links(markdown):
    """Link targets outside fenced blocks that name a path: no scheme, no pure #anchor; anchors cut."""
    targets = []
    for language, text in blocks(markdown):
        if language is None:
            for target in LINK.findall(text):
                if re.match(r'[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('#'):
                    continue  # http(s), mailto: not files; an anchor on this page
                targets.append(target.split('#')[0])
    return targets


def fenced_commands(markdown, language='bash'):
    """The simple commands of the page's ```<language> blocks, each a token list: backslash-continued
    lines joined, `# comments` dropped, lines split on `&&`, `||`, `;` and `|`."""
    commands = []
    for lang, text in blocks(markdown):
        if lang != language:
            continue
        for line in text.replace('\\\n', ' ').splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command = []
            for token in list(lexer) + [';']:
                if token in ('&&', '||', ';', '|', '&'):
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(token)
    return commands


@functools.lru_cache(maxsize=None)
def help_text(script, subcommand=None):
    """`python script [subcommand] --help`, falling back to the top-level help if the subcommand has none.
    absl's --help exits 1 (argparse's 0), so a help is any exit 0 or 1 that printed and raised nothing."""
    for args in ([subcommand, '--help'], ['--help']) if subcommand else (['--help'],):
        result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=180)
        if result.returncode in (0, 1) and result.stdout.strip() and 'Traceback' not in result.stderr:
            return result.stdout + result.stderr
    raise AssertionError(f'python {script} --help exits {result.returncode}: {result.stderr[-1000:]}')


def exists(path):
    return os.path.exists(os.path.join(ROOT, path))


def command_problems(tokens, data_dir):
    """What is wrong with one README command, as a list of sentences (empty: nothing)."""
    program, args = tokens[0], tokens[1:]
    if program in ('.', 'source', 'cd', 'export'):
        return []
    if program in ('pip', 'pip3'):  # only the files it is told to read
        return [f'pip reads {a}, which does not exist' for flag, a in zip(args, args[1:])
                if flag in ('-r', '--requirement') and not exists(a)]
    if program not in ('python', 'python3'):
        return [f'unknown program {program!r}: teach tests/test_docs.py what to check']
    if args[:2] == ['-m', 'venv']:
        return []
    if args[:2] == ['-m', 'pytest']:
        return [f'pytest is given {a}, which does not exist' for a in args[2:]
                if not a.startswith('-') and not exists(a.split('::')[0])]
    if args[0] == '-m':
        return [f'no check for python -m {args[1]}: teach tests/test_docs.py what to check']
    script, args = args[0], args[1:]
    if not exists(script):
        return [f'{script} does not exist']
    if script == 'train.py':
        # --print_config resolves the config (dataset, presets, every --config.FIELD) and stops; a data
        # folder that does not exist shows that nothing reads the dataset, even a real one like shapes3d.
        env = {**os.environ, 'DISENTAX_DATA_DIR': data_dir}
        result = subprocess.run([sys.executable, script, *args, '--print_config'], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=180)
        problems = [] if result.returncode == 0 else [
            f'train.py --print_config exits {result.returncode}: {(result.stdout + result.stderr)[-1500:]}']
        if os.path.exists(data_dir):
            problems.append('train.py --print_config touched the data folder')
        return problems
    subcommand = args[0] if args and not args[0].startswith('-') else None
    text = help_text(script, subcommand)
    flags = sorted({a.split('=')[0] for a in args if a.startswith('--')})
    return [f'{script} has no flag {flag} (not in its --help)' for flag in flags
            if not re.search(rf'(?<![\w-]){re.escape(flag)}(?![\w-])', text)]


# ----------------------------------------------------------------------------------------------
# The helpers, on synthetic pages
# ----------------------------------------------------------------------------------------------

SYNTHETIC = """\
Run `python outside.py` first, see [the docs](docs/a.md#part), [web](https://x.org), [here](#top).

```bash
python3 -m venv .venv && . .venv/bin/activate; python train.py --config=c.py:toyshapes,tiny  # fast
python eval.py \\
  --workdir=runs/x
```

```text
python not_a_command.py [not](a_link.md)
```
![figure](results/fig.png "a title")
"""


def test_fenced_commands_reads_only_bash_blocks_and_splits_them():
    assert fenced_commands(SYNTHETIC) == [
        ['python3', '-m', 'venv', '.venv'], ['.', '.venv/bin/activate'],
        ['python', 'train.py', '--config=c.py:toyshapes,tiny'], ['python', 'eval.py', '--workdir=runs/x']]


def test_relative_links_skips_urls_anchors_and_code_blocks():
    assert relative_links(SYNTHETIC) == ['docs/a.md', 'results/fig.png']


def test_command_problems_names_missing_files_and_flags(tmp_path):
    data_dir = str(tmp_path / 'data')
    assert command_problems(['python', 'no_such_script.py', '--x=1'], data_dir) == [
        'no_such_script.py does not exist']
    assert command_problems(['python', '-m', 'pytest', '-q', 'tests/no_such_test.py'], data_dir) == [
        'pytest is given tests/no_such_test.py, which does not exist']
    assert command_problems(['python', 'eval.py', '--workdir=w', '--no_such_flag=1'], data_dir) == [
        'eval.py has no flag --no_such_flag (not in its --help)']
    assert command_problems(['python', 'train.py', '--config=configs/no_such.py:toyshapes'], data_dir)


# ----------------------------------------------------------------------------------------------
# The repository's pages
# ----------------------------------------------------------------------------------------------

def link_cases():
    cases = []
    for page in markdown_files():
        with open(os.path.join(ROOT, page)) as f:
            for target in relative_links(f.read()):
                cases.append(pytest.param(page, target, id=f'{page}->{target}'))
    return cases


@pytest.mark.parametrize('page,target', link_cases())
def test_relative_link_resolves(page, target):
    path = os.path.normpath(os.path.join(os.path.dirname(page), target))
    assert exists(path), f'{page} links {target}, which does not exist ({path})'


def readme_commands():
    with open(os.path.join(ROOT, 'README.md')) as f:
        return [pytest.param(c, id=' '.join(c)[:80]) for c in fenced_commands(f.read())]


@pytest.mark.parametrize('tokens', readme_commands())
def test_readme_command_names_what_exists(tokens, tmp_path):
    assert command_problems(tokens, str(tmp_path / 'data')) == []


def test_readme_python_example_runs_with_the_model_file_copied_alone(tmp_path):
    """README's ```python block, as a reader pastes it beside a copy of models/qlae.py."""
    from tests.conftest import run_with_model_files_alone
    with open(os.path.join(ROOT, 'README.md')) as f:
        scripts = [text for language, text in blocks(f.read()) if language == 'python']
    assert len(scripts) == 1
    script = scripts[0] + '\nprint(latents.shape, qlae.is_discrete(config))\n'
    stdout = run_with_model_files_alone(tmp_path, ['qlae'], script)
    assert stdout.split() == ['(8,', '12)', 'True']
