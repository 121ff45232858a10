"""Task families for quench-tiny.

Synthetic families: FAMILIES[name] = (generate(rng) -> (prompt, answer), check(prompt, answer_text) -> bool).
English chat families (WordNet / KJV): ENGLISH[name] = generate(rng) -> (prompt, answer).
Plain text documents: plain_documents() -> list of strings.
"""
import datetime
import functools
import gzip
import json
import os
import random
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
WORDNET = '/usr/share/wordnet'
# Parsed WordNet/KJV sources, for machines without the Debian packages (a lent GPU): written by
# `python3 tasks.py --write-text-cache`, read by the three loaders below when present.
TEXT_CACHE = os.path.join(HERE, 'runs', 'cache', 'text_sources.json.gz')


@functools.lru_cache(None)
def _text_cache():
    if not os.path.exists(TEXT_CACHE):
        return None
    with gzip.open(TEXT_CACHE, 'rt', encoding='utf-8') as f:
        return json.load(f)


def write_text_cache():
    os.makedirs(os.path.dirname(TEXT_CACHE), exist_ok=True)
    data = {'common_words': common_words(), 'wordnet_synsets': wordnet_synsets(), 'kjv_verses': kjv_verses(),
            'wordnet_nouns': _wordnet_nouns()}
    tmp = TEXT_CACHE + '.tmp'
    with gzip.open(tmp, 'wt', encoding='utf-8') as f:
        json.dump(data, f)
    os.replace(tmp, TEXT_CACHE)

NAMES = ['Maria', 'James', 'Aiko', 'Omar', 'Lena', 'Carlos', 'Priya', 'Noah', 'Fatima', 'Ethan', 'Sofia', 'Liam',
         'Chen', 'Amara', 'Lucas', 'Ines', 'Mateo', 'Hana', 'David', 'Zara', 'Oliver', 'Yuki', 'Elena', 'Samuel',
         'Nadia', 'Peter', 'Grace', 'Ravi', 'Anna', 'Tom', 'Leila', 'Jonas', 'Mia', 'Kofi', 'Emma', 'Diego',
         'Sara', 'Ivan', 'Chloe', 'Ben', 'Rosa', 'Felix', 'Julia', 'Amir', 'Nina', 'Hugo', 'Alice', 'Victor']
CITIES = ['Paris', 'Lagos', 'Tokyo', 'Lima', 'Oslo', 'Cairo', 'Denver', 'Madrid', 'Seoul', 'Boston', 'Dublin',
          'Mumbai', 'Quito', 'Berlin', 'Sydney', 'Toronto', 'Nairobi', 'Rome', 'Austin', 'Vienna']
ITEMS = ['apples', 'pencils', 'stickers', 'marbles', 'cookies', 'books', 'coins', 'cards', 'oranges', 'stamps',
         'balloons', 'shells', 'candies', 'flowers', 'toys']
DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday']


@functools.lru_cache(None)
def common_words():
    """Lowercase alphabetic WordNet lemmas (3-9 letters) that occur in the sense-tagged corpus."""
    c = _text_cache()
    if c:
        return c['common_words']
    words = set()
    for pos in ('noun', 'verb', 'adj', 'adv'):
        with open(f'{WORDNET}/index.{pos}', encoding='latin-1') as f:
            for line in f:
                if line.startswith(' '):
                    continue
                p = line.split()
                if not re.fullmatch(r'[a-z]{3,9}', p[0]):
                    continue
                pc = int(p[3])
                if int(p[5 + pc]) > 0:
                    words.add(p[0])
    return sorted(words)


def _num(rng, lo_digits, hi_digits):
    n = rng.randint(lo_digits, hi_digits)
    return rng.randint(10 ** (n - 1), 10 ** n - 1)


def _ints(s):
    return [int(x) for x in re.findall(r'\d+', s)]


def _quoted(s):
    return re.findall(r"'([^']*)'", s)


# ---------------------------------------------------------------- arithmetic
ADD_T = ['What is {a} + {b}?', 'What is {a} plus {b}?', 'Compute {a} + {b}.', 'Add {a} and {b}.',
         'What is the sum of {a} and {b}?', '{a} + {b} = ?', 'Calculate {a} + {b}.']


def gen_add(rng):
    a, b = _num(rng, 2, 4), _num(rng, 2, 4)
    return rng.choice(ADD_T).format(a=a, b=b), str(a + b)


def solve_add(p):
    n = _ints(p)
    return str(n[0] + n[1])


SUB_T = ['What is {a} - {b}?', 'What is {a} minus {b}?', 'Compute {a} - {b}.', 'Subtract {b} from {a}.',
         'What is the difference between {a} and {b}?', '{a} - {b} = ?', 'Calculate {a} - {b}.']


def gen_sub(rng):
    a, b = _num(rng, 2, 4), _num(rng, 2, 4)
    if a < b:
        a, b = b, a
    return rng.choice(SUB_T).format(a=a, b=b), str(a - b)


def solve_sub(p):
    n = _ints(p)
    return str(n[1] - n[0]) if p.startswith('Subtract') else str(n[0] - n[1])


MUL_T = ['What is {a} * {b}?', 'What is {a} times {b}?', 'Multiply {a} by {b}.', 'Compute {a} x {b}.',
         'What is the product of {a} and {b}?', 'Calculate {a} * {b}.']


def gen_mul(rng):
    a = _num(rng, 2, 2)
    b = _num(rng, 1, 2)
    if rng.random() < 0.5:
        a, b = b, a
    return rng.choice(MUL_T).format(a=a, b=b), str(a * b)


def solve_mul(p):
    n = _ints(p)
    return str(n[0] * n[1])


# ---------------------------------------------------------------- sorting
SORTN_ASC = ['Sort these numbers in ascending order: {l}', 'Sort from smallest to largest: {l}',
             'Put these numbers in increasing order: {l}']
SORTN_DESC = ['Sort these numbers in descending order: {l}', 'Sort from largest to smallest: {l}']


def gen_sort_numbers(rng):
    xs = [rng.randint(0, 999) if rng.random() < 0.7 else rng.randint(0, 99) for _ in range(rng.randint(3, 7))]
    desc = rng.random() < 0.35
    t = rng.choice(SORTN_DESC if desc else SORTN_ASC)
    return t.format(l=', '.join(map(str, xs))), ', '.join(map(str, sorted(xs, reverse=desc)))


def solve_sort_numbers(p):
    xs = _ints(p.split(':', 1)[1])
    desc = 'descending' in p or 'largest to smallest' in p
    return ', '.join(map(str, sorted(xs, reverse=desc)))


SORTW_T = ['Sort these words alphabetically: {l}', 'Put these words in alphabetical order: {l}',
           'Arrange in alphabetical order: {l}']


def gen_sort_words(rng):
    ws = rng.sample(common_words(), rng.randint(3, 6))
    return rng.choice(SORTW_T).format(l=', '.join(ws)), ', '.join(sorted(ws))


def solve_sort_words(p):
    return ', '.join(sorted(w.strip() for w in p.split(':', 1)[1].split(',')))


# ---------------------------------------------------------------- words
REV_T = ["Reverse the word '{w}'.", "Spell '{w}' backwards.", "Write '{w}' in reverse."]


def gen_reverse_word(rng):
    w = rng.choice(common_words())
    return rng.choice(REV_T).format(w=w), w[::-1]


def solve_reverse_word(p):
    return _quoted(p)[0][::-1]


SPELL_T = ["Spell '{w}' letter by letter, separated by spaces.", "Spell out '{w}' one letter at a time.",
           "Spell the word '{w}' with dashes between the letters.", "Spell '{w}' using hyphens."]


def gen_spell(rng):
    w = rng.choice(common_words())
    p = rng.choice(SPELL_T).format(w=w)
    return p, solve_spell(p)


def solve_spell(p):
    w = _quoted(p)[0]
    sep = '-' if ('dash' in p or 'hyphen' in p) else ' '
    return sep.join(w)


CNTL_T = ["How many times does the letter '{c}' appear in '{w}'?", "Count the letter '{c}' in the word '{w}'.",
          "How many '{c}'s are in '{w}'?"]


def gen_count_letter(rng):
    w = rng.choice(common_words())
    c = rng.choice(w) if rng.random() < 0.75 else rng.choice('abcdefghijklmnopqrstuvwxyz')
    return rng.choice(CNTL_T).format(c=c, w=w), str(w.count(c))


def solve_count_letter(p):
    c, w = _quoted(p)[:2]
    return str(w.count(c))


CNTI_T = ['How many items are in this list: {l}?', 'Count the words in this list: {l}.',
          'How many words are there in: {l}?']


def gen_count_items(rng):
    ws = [rng.choice(common_words()) for _ in range(rng.randint(2, 12))]
    return rng.choice(CNTI_T).format(l=', '.join(ws)), str(len(ws))


def solve_count_items(p):
    return str(len(p.split(':', 1)[1].strip(' ?.').split(',')))


# ---------------------------------------------------------------- units
UNITS = {'kilometers': ('meters', 1000), 'meters': ('centimeters', 100), 'hours': ('minutes', 60),
         'minutes': ('seconds', 60), 'days': ('hours', 24), 'weeks': ('days', 7), 'kilograms': ('grams', 1000),
         'feet': ('inches', 12), 'liters': ('milliliters', 1000), 'yards': ('feet', 3), 'years': ('months', 12),
         'centimeters': ('millimeters', 10), 'dozens': ('items', 12)}
UNIT_T = ['Convert {v} {f} to {t}.', 'How many {t} are in {v} {f}?', '{v} {f} is how many {t}?',
          'How many {t} is {v} {f}?']


def gen_unit_convert(rng):
    f = rng.choice(sorted(UNITS))
    t, k = UNITS[f]
    v = rng.randint(2, 99 if k >= 100 else 999)
    return rng.choice(UNIT_T).format(v=v, f=f, t=t), str(v * k)


def solve_unit_convert(p):
    v, f = re.search(r'(\d+) ([a-z]+)', p).groups()
    return str(int(v) * UNITS[f][1])


# ---------------------------------------------------------------- dates
WD_T = ['Today is {d}. What day of the week will it be in {n} days?',
        'If today is {d}, what day is it {n} days from now?',
        'What day of the week comes {n} days after {d}?']
DATE_T = ['What date is {n} days after {s}?', 'What is the date {n} days after {s}?',
          'Add {n} days to the date {s}.']


def gen_date_arith(rng):
    if rng.random() < 0.5:
        d = rng.choice(DAYS)
        n = rng.randint(1, 100)
        return rng.choice(WD_T).format(d=d, n=n), DAYS[(DAYS.index(d) + n) % 7]
    base = datetime.date(2000, 1, 1) + datetime.timedelta(days=rng.randint(0, 365 * 30))
    n = rng.randint(1, 60)
    return rng.choice(DATE_T).format(n=n, s=base.isoformat()), (base + datetime.timedelta(days=n)).isoformat()


def solve_date_arith(p):
    m = re.search(r'(\d{4})-(\d{2})-(\d{2})', p)
    n = int(re.search(r'(\d+) days', p).group(1))
    if m:
        base = datetime.date(*map(int, m.groups()))
        return (base + datetime.timedelta(days=n)).isoformat()
    d = next(x for x in DAYS if x in p)
    return DAYS[(DAYS.index(d) + n) % 7]


# ---------------------------------------------------------------- json
JSON_S = ['{name} is {age} years old.', '{name}, aged {age}, lives in {city}.', 'Meet {name}, who just turned {age}.',
          'At {age}, {name} moved to {city}.', '{name} celebrated turning {age} in {city}.']
JSON_T = ['Extract the name and age as JSON: {s}', 'Return JSON with keys name and age for: {s}',
          'Give the name and age in JSON. {s}']


def gen_json_extract(rng):
    name, age, city = rng.choice(NAMES), rng.randint(1, 99), rng.choice(CITIES)
    s = rng.choice(JSON_S).format(name=name, age=age, city=city)
    return rng.choice(JSON_T).format(s=s), json.dumps({'name': name, 'age': age}, separators=(',', ':'))


def solve_json_extract(p):
    name = next(w for w in re.findall(r'[A-Z][a-z]+', p) if w in NAMES)
    return json.dumps({'name': name, 'age': _ints(p)[0]}, separators=(',', ':'))


# ---------------------------------------------------------------- python
PY_FIXED = [
    ('returns the square of x', 'def square(x):\n    return x * x'),
    ('returns the cube of x', 'def cube(x):\n    return x * x * x'),
    ('returns twice x', 'def double(x):\n    return 2 * x'),
    ('returns the negation of x', 'def negate(x):\n    return -x'),
    ('returns the absolute value of x', 'def absolute(x):\n    return abs(x)'),
    ('returns True if x is even', 'def is_even(x):\n    return x % 2 == 0'),
    ('returns True if x is odd', 'def is_odd(x):\n    return x % 2 == 1'),
    ('returns the string s reversed', 'def reverse(s):\n    return s[::-1]'),
    ('returns the length of the list xs', 'def length(xs):\n    return len(xs)'),
    ('returns the sum of the list xs', 'def total(xs):\n    return sum(xs)'),
    ('returns the largest element of the list xs', 'def largest(xs):\n    return max(xs)'),
    ('returns the smallest element of the list xs', 'def smallest(xs):\n    return min(xs)'),
    ('returns the first element of the list xs', 'def first(xs):\n    return xs[0]'),
    ('returns the last element of the list xs', 'def last(xs):\n    return xs[-1]'),
    ('returns the sum of a and b', 'def add(a, b):\n    return a + b'),
    ('returns the product of a and b', 'def multiply(a, b):\n    return a * b'),
    ('returns the larger of a and b', 'def maximum(a, b):\n    return max(a, b)'),
    ('returns the string s in uppercase', 'def upper(s):\n    return s.upper()'),
    ('returns the string s in lowercase', 'def lower(s):\n    return s.lower()'),
    ('returns True if the string s is empty', 'def is_empty(s):\n    return len(s) == 0'),
    ('returns the list xs sorted', 'def sort_list(xs):\n    return sorted(xs)'),
]
PY_PARAM = [
    ('returns x plus {k}', 'def add_{k}(x):\n    return x + {k}'),
    ('returns x minus {k}', 'def subtract_{k}(x):\n    return x - {k}'),
    ('returns x multiplied by {k}', 'def times_{k}(x):\n    return x * {k}'),
    ('returns the remainder of x divided by {k}', 'def mod_{k}(x):\n    return x % {k}'),
    ('returns True if x is divisible by {k}', 'def divisible_by_{k}(x):\n    return x % {k} == 0'),
    ('returns True if x is greater than {k}', 'def greater_than_{k}(x):\n    return x > {k}'),
    ('returns True if x is less than {k}', 'def less_than_{k}(x):\n    return x < {k}'),
    ('returns x raised to the power {k}', 'def power_{k}(x):\n    return x ** {k}'),
]
PY_T = ['Write a Python function that {d}.', 'Define a Python function that {d}.',
        'Create a Python function that {d}.']


@functools.lru_cache(None)
def _py_table():
    t = dict(PY_FIXED)
    for d, c in PY_PARAM:
        for k in range(2, 51):
            t[d.format(k=k)] = c.format(k=k)
    return t


def gen_python_fn(rng):
    if rng.random() < 0.4:
        d, c = rng.choice(PY_FIXED)
    else:
        d, c = rng.choice(PY_PARAM)
        k = rng.randint(2, 9 if 'power' in d else 50)
        d, c = d.format(k=k), c.format(k=k)
    return rng.choice(PY_T).format(d=d), c


def solve_python_fn(p):
    return _py_table()[re.search(r'function that (.*)\.$', p).group(1)]


# ---------------------------------------------------------------- sudoku 4x4
SUDOKU_T = ['Solve this 4x4 sudoku (0 marks a blank):\n{g}', 'Fill in the 4x4 sudoku. Blanks are 0.\n{g}',
            'Complete this 4x4 sudoku puzzle where 0 is empty:\n{g}']


def _sudoku_ok(g):
    for i in range(4):
        if sorted(g[i]) != [1, 2, 3, 4] or sorted(g[r][i] for r in range(4)) != [1, 2, 3, 4]:
            return False
    for br in (0, 2):
        for bc in (0, 2):
            if sorted(g[br + a][bc + b] for a in (0, 1) for b in (0, 1)) != [1, 2, 3, 4]:
                return False
    return True


def _sudoku_count(g, limit=2):
    for r in range(4):
        for c in range(4):
            if g[r][c] == 0:
                n = 0
                for v in range(1, 5):
                    if v in g[r] or any(g[i][c] == v for i in range(4)):
                        continue
                    br, bc = r - r % 2, c - c % 2
                    if any(g[br + a][bc + b] == v for a in (0, 1) for b in (0, 1)):
                        continue
                    g[r][c] = v
                    n += _sudoku_count(g, limit)
                    g[r][c] = 0
                    if n >= limit:
                        return n
                return n
    return 1


def _grid_str(g):
    return '\n'.join(' '.join(map(str, row)) for row in g)


def gen_sudoku4(rng):
    g = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    perm = rng.sample([1, 2, 3, 4], 4)
    g = [[perm[v - 1] for v in row] for row in g]
    bands = [[0, 1], [2, 3]]
    rng.shuffle(bands)
    rows = [r for b in bands for r in rng.sample(b, 2)]
    g = [g[r] for r in rows]
    stacks = [[0, 1], [2, 3]]
    rng.shuffle(stacks)
    cols = [c for s in stacks for c in rng.sample(s, 2)]
    g = [[row[c] for c in cols] for row in g]
    if rng.random() < 0.5:
        g = [list(r) for r in zip(*g)]
    sol = [row[:] for row in g]
    cells = rng.sample(range(16), 16)
    target = rng.randint(5, 10)
    blanks = 0
    for cell in cells:
        if blanks >= target:
            break
        r, c = divmod(cell, 4)
        v = g[r][c]
        g[r][c] = 0
        if _sudoku_count([row[:] for row in g]) == 1:
            blanks += 1
        else:
            g[r][c] = v
    return rng.choice(SUDOKU_T).format(g=_grid_str(g)), _grid_str(sol)


def _sudoku_given(p):
    return [[int(x) for x in line.split()] for line in p.strip().split('\n')[-4:]]


def solve_sudoku4(p):
    g = _sudoku_given(p)

    def rec():
        for r in range(4):
            for c in range(4):
                if g[r][c] == 0:
                    for v in range(1, 5):
                        g[r][c] = v
                        if rec():
                            return True
                    g[r][c] = 0
                    return False
        return _sudoku_ok(g)
    rec()
    return _grid_str(g)


def check_sudoku4(p, a):
    try:
        g = [[int(x) for x in line.split()] for line in a.strip().split('\n')]
        if len(g) != 4 or any(len(r) != 4 for r in g) or not _sudoku_ok(g):
            return False
        giv = _sudoku_given(p)
        return all(giv[r][c] in (0, g[r][c]) for r in range(4) for c in range(4))
    except Exception:
        return False


# ---------------------------------------------------------------- word problems
def gen_word_problem(rng):
    name, it = rng.choice(NAMES), rng.choice(ITEMS)
    k = rng.randint(0, 4)
    if k == 0:
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        return f'{name} has {a} {it}. Then {name} buys {b} more. How many {it} does {name} have now?', str(a + b)
    if k == 1:
        a = rng.randint(5, 60)
        b = rng.randint(1, a - 1)
        return f'{name} had {a} {it} and gave {b} to a friend. How many {it} are left?', str(a - b)
    if k == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f'There are {a} boxes with {b} {it} in each box. How many {it} are there in total?', str(a * b)
    if k == 3:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return f'{name} shares {a * b} {it} equally among {a} friends. How many {it} does each friend get?', str(b)
    a, b = rng.randint(10, 60), rng.randint(2, 30)
    c = rng.randint(1, a + b - 1)
    return f'A shelf holds {a} {it}. {name} adds {b} {it} and then removes {c}. How many {it} are on the shelf?', \
        str(a + b - c)


def solve_word_problem(p):
    n = _ints(p)
    if 'buys' in p:
        return str(n[0] + n[1])
    if 'gave' in p:
        return str(n[0] - n[1])
    if 'boxes with' in p:
        return str(n[0] * n[1])
    if 'equally among' in p:
        return str(n[0] // n[1])
    return str(n[0] + n[1] - n[2])


# ---------------------------------------------------------------- registry
def _exact(solve):
    def check(p, a):
        try:
            return a.strip() == solve(p)
        except Exception:
            return False
    return check


def _check_json(p, a):
    try:
        return json.loads(a.strip()) == json.loads(solve_json_extract(p))
    except Exception:
        return False


FAMILIES = {
    'add': (gen_add, _exact(solve_add)),
    'sub': (gen_sub, _exact(solve_sub)),
    'mul': (gen_mul, _exact(solve_mul)),
    'sort_numbers': (gen_sort_numbers, _exact(solve_sort_numbers)),
    'sort_words': (gen_sort_words, _exact(solve_sort_words)),
    'reverse_word': (gen_reverse_word, _exact(solve_reverse_word)),
    'spell': (gen_spell, _exact(solve_spell)),
    'count_letter': (gen_count_letter, _exact(solve_count_letter)),
    'count_items': (gen_count_items, _exact(solve_count_items)),
    'unit_convert': (gen_unit_convert, _exact(solve_unit_convert)),
    'date_arith': (gen_date_arith, _exact(solve_date_arith)),
    'json_extract': (gen_json_extract, _check_json),
    'python_fn': (gen_python_fn, _exact(solve_python_fn)),
    'sudoku4': (gen_sudoku4, check_sudoku4),
    'word_problem': (gen_word_problem, _exact(solve_word_problem)),
}
# sampling weights inside the synthetic share (arithmetic and sorting upweighted)
FAMILY_WEIGHTS = {f: 1.0 for f in FAMILIES}
FAMILY_WEIGHTS.update({'add': 3.0, 'sub': 3.0, 'mul': 2.0, 'sort_numbers': 2.5, 'sort_words': 2.5})


def check(family, prompt, answer_text):
    return FAMILIES[family][1](prompt, answer_text)


# ---------------------------------------------------------------- held-out set
HELDOUT_PATH = os.path.join(HERE, 'heldout.jsonl')
HELDOUT_SEED = 1234
HELDOUT_PER_FAMILY = 50
NEVER_HELDOUT = {'What is 27 + 58?'}


def build_heldout():
    rng = random.Random(HELDOUT_SEED)
    rows = []
    for fam, (gen, _) in FAMILIES.items():
        seen = set()
        while len(seen) < HELDOUT_PER_FAMILY:
            p, a = gen(rng)
            if p in seen or p in NEVER_HELDOUT:
                continue
            seen.add(p)
            rows.append({'family': fam, 'prompt': p, 'answer': a})
    return rows


def load_heldout(path=HELDOUT_PATH):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


# ---------------------------------------------------------------- English (WordNet / KJV)
@functools.lru_cache(None)
def wordnet_synsets():
    """List of (lemmas, definition, examples)."""
    c = _text_cache()
    if c:
        return [tuple(x) for x in c['wordnet_synsets']]
    out = []
    for pos in ('noun', 'verb', 'adj', 'adv'):
        with open(f'{WORDNET}/data.{pos}', encoding='latin-1') as f:
            for line in f:
                if line.startswith(' ') or '|' not in line:
                    continue
                head, gloss = line.split('|', 1)
                p = head.split()
                wc = int(p[3], 16)
                lemmas = [re.sub(r'\(.*\)$', '', p[4 + 2 * i]).replace('_', ' ') for i in range(wc)]
                gloss = gloss.strip()
                parts = gloss.split('; "')
                definition = parts[0].strip().rstrip(';').strip()
                examples = [x.strip().strip(';').strip().strip('"').strip() for x in re.findall(r'"[^"]+"', gloss)]
                if definition.isascii():
                    out.append((lemmas, definition, [e for e in examples if e.isascii()]))
    return out


# the nouns of bench/english.ts's open prompts: never described in training (held out like the task set)
BENCH_NOUNS = {'sea', 'river', 'city', 'moon', 'dog', 'wind', 'teacher', 'bridge', 'bread', 'music', 'garden', 'king',
               'bird', 'winter', 'story', 'people'}


@functools.lru_cache(None)
def wordnet_nouns():
    """[(noun, definition, examples)]: common one-word nouns (sense-tagged in WordNet's corpus) with their most
    frequent sense's gloss, without BENCH_NOUNS."""
    return [x for x in _wordnet_nouns() if x[0] not in BENCH_NOUNS]


def _wordnet_nouns():
    c = _text_cache()
    if c and 'wordnet_nouns' in c:
        return [tuple(x) for x in c['wordnet_nouns']]
    if not os.path.isdir(WORDNET):
        raise SystemExit('wordnet_nouns: the text cache predates it and WordNet is not installed; rebuild the cache '
                         'where it is (tasks.py --write-text-cache)')
    out = []
    with open(f'{WORDNET}/index.noun', encoding='latin-1') as idx, open(f'{WORDNET}/data.noun', 'rb') as data:
        for line in idx:
            if line.startswith(' '):
                continue
            p = line.split()
            pc = int(p[3])
            if not re.fullmatch(r'[a-z]{3,12}', p[0]) or int(p[5 + pc]) == 0:
                continue
            data.seek(int(p[6 + pc]))  # the first synset listed is the most frequent sense
            gloss = data.readline().decode('latin-1').split('|', 1)[1].strip()
            definition = gloss.split('; "')[0].strip().rstrip(';').strip()
            examples = [x.strip('"').strip() for x in re.findall(r'"[^"]+"', gloss)]
            plural = p[0].endswith('s') and not p[0].endswith('ss')  # "colors": the gloss would not fit "a colors is"
            if definition.isascii() and len(definition.split()) >= 3 and not plural:
                out.append((p[0], definition, [e for e in examples if e.isascii()]))
    return out


BOOKS = {'Ge': 'Genesis', 'Exo': 'Exodus', 'Lev': 'Leviticus', 'Num': 'Numbers', 'Deu': 'Deuteronomy',
         'Josh': 'Joshua', 'Jdgs': 'Judges', 'Ruth': 'Ruth', '1Sm': '1 Samuel', '2Sm': '2 Samuel', '1Ki': '1 Kings',
         '2Ki': '2 Kings', '1Chr': '1 Chronicles', '2Chr': '2 Chronicles', 'Ezra': 'Ezra', 'Neh': 'Nehemiah',
         'Est': 'Esther', 'Job': 'Job', 'Psa': 'Psalms', 'Prv': 'Proverbs', 'Eccl': 'Ecclesiastes',
         'SSol': 'Song of Solomon', 'Isa': 'Isaiah', 'Jer': 'Jeremiah', 'Lam': 'Lamentations', 'Eze': 'Ezekiel',
         'Dan': 'Daniel', 'Hos': 'Hosea', 'Joel': 'Joel', 'Amos': 'Amos', 'Obad': 'Obadiah', 'Jonah': 'Jonah',
         'Mic': 'Micah', 'Nahum': 'Nahum', 'Hab': 'Habakkuk', 'Zep': 'Zephaniah', 'Hag': 'Haggai',
         'Zec': 'Zechariah', 'Mal': 'Malachi', 'Mat': 'Matthew', 'Mark': 'Mark', 'Luke': 'Luke', 'John': 'John',
         'Acts': 'Acts', 'Rom': 'Romans', '1Cor': '1 Corinthians', '2Cor': '2 Corinthians', 'Gal': 'Galatians',
         'Eph': 'Ephesians', 'Phi': 'Philippians', 'Col': 'Colossians', '1Th': '1 Thessalonians',
         '2Th': '2 Thessalonians', '1Tim': '1 Timothy', '2Tim': '2 Timothy', 'Titus': 'Titus', 'Phmn': 'Philemon',
         'Heb': 'Hebrews', 'Jas': 'James', '1Pet': '1 Peter', '2Pet': '2 Peter', '1Jn': '1 John', '2Jn': '2 John',
         '3Jn': '3 John', 'Jude': 'Jude', 'Rev': 'Revelation'}


@functools.lru_cache(None)
def kjv_verses():
    """List of (book, chapter, verse, text) from the `bible` CLI (package bible-kjv)."""
    c = _text_cache()
    if c:
        return [tuple(x) for x in c['kjv_verses']]
    txt = subprocess.run(['bible', '-f', 'Gen1:1-Rev22:21'], capture_output=True, text=True, check=True).stdout
    out = []
    for line in txt.split('\n'):
        m = re.match(r'(\d?[A-Za-z]+)(\d+):(\d+) (.*)$', line)
        if m:
            out.append((BOOKS[m.group(1)], int(m.group(2)), int(m.group(3)), m.group(4).strip()))
    assert len(out) > 30000, len(out)
    return out


DEF_T = ["What does '{w}' mean?", "Define '{w}'.", "What is the meaning of the word '{w}'?",
         "Give a definition of '{w}'."]
USE_T = ["Use the word '{w}' in a sentence.", "Give an example sentence with '{w}'.",
         "Write a sentence using '{w}'."]
QUOTE_T = ['Quote {ref}.', 'What does {ref} say?', 'Recite {ref}.']


def gen_define(rng):
    lemmas, d, _ = rng.choice(wordnet_synsets())
    return rng.choice(DEF_T).format(w=rng.choice(lemmas)), d


@functools.lru_cache(None)
def _usable_examples():
    out = []
    for lemmas, _, exs in wordnet_synsets():
        for e in exs:
            if len(e.split()) < 4:
                continue
            for w in lemmas:
                if re.search(r'\b' + re.escape(w) + r'\b', e):
                    out.append((w, e))
                    break
    return out


def gen_use_word(rng):
    w, e = rng.choice(_usable_examples())
    return rng.choice(USE_T).format(w=w), e


def gen_quote_verse(rng):
    b, c, v, t = rng.choice(kjv_verses())
    return rng.choice(QUOTE_T).format(ref=f'{b} {c}:{v}'), t


def gen_continue_text(rng):
    while True:
        t = rng.choice(kjv_verses())[3] if rng.random() < 0.7 else rng.choice(_usable_examples())[1]
        ws = t.split(' ')
        if len(ws) >= 6:
            break
    k = rng.randint(3, len(ws) // 2 + 1)
    return 'Continue the text: ' + ' '.join(ws[:k]), ' '.join(ws[k:])


DESCRIBE_T = ['Tell me about the {w}.', 'What is {a} {w}?', 'Describe {a} {w}.', 'Write about the {w}.',
              'What do you know about the {w}?', 'Explain what {a} {w} is.']


def gen_describe(rng):
    """Open prompts about a thing, answered in whole sentences built from its WordNet gloss and example."""
    w, d, exs = rng.choice(wordnet_nouns())
    art = 'an' if w[0] in 'aeiou' else 'a'
    a = f'{art.capitalize()} {w} is {d}.'
    if exs:
        e = rng.choice(exs)
        a += f' For example: "{e[0].upper() + e[1:]}."'
    return rng.choice(DESCRIBE_T).format(w=w, a=art), a


ENGLISH = {'define': gen_define, 'use_word': gen_use_word, 'quote_verse': gen_quote_verse,
           'continue_text': gen_continue_text, 'describe': gen_describe}


def plain_documents():
    """Plain-text documents: KJV chapters and blocks of WordNet glosses."""
    docs, cur, key = [], [], None
    for b, c, v, t in kjv_verses():
        if (b, c) != key and cur:
            docs.append(' '.join(cur))
            cur = []
        key = (b, c)
        cur.append(t)
    docs.append(' '.join(cur))
    block = []
    for lemmas, d, exs in wordnet_synsets():
        s = f'{lemmas[0]}: {d}.'
        if exs:
            s += ' For example: ' + '; '.join(exs) + '.'
        block.append(s)
        if len(block) == 50:
            docs.append('\n'.join(block))
            block = []
    return docs


if __name__ == '__main__':
    import sys
    if '--write-text-cache' in sys.argv:
        write_text_cache()
        print('wrote', TEXT_CACHE, os.path.getsize(TEXT_CACHE))
        sys.exit(0)
    rng = random.Random(0)
    for fam, (gen, chk) in FAMILIES.items():
        for _ in range(300):
            p, a = gen(rng)
            assert chk(p, a), (fam, p, a)
        print(fam, '|', repr(p), '->', repr(a))
    for fam, gen in ENGLISH.items():
        print(fam, '|', gen(rng))
