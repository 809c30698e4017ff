"""tools/mutate.py (`make mutate`): reading the list, applying a mutation, telling a killed
mutation from a survivor, and reporting a stale one as a failure.  No process is started."""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "mutate.py"
_spec = importlib.util.spec_from_file_location("titan_tools_mutate", _TOOL)
mutate = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mutate  # dataclasses look their module up by name
_spec.loader.exec_module(mutate)

ONE = '''
[[mutation]]
id = "cascade-one-level"
file = "titan/core/scheduler.py"
breaks = "a cascade   stops after one level"
find = "    self._cascading.append(failed)  "
replace = "pass"
'''

SOURCE = """def f(x):
    if x:
        return 1
    return 2
"""

# What trial prints when a test fails and --exitfirst stops it.
TRIAL_FAIL = """tests.unit.test_x
  CascadeTests
    test_deep ...                                                        [FAIL]

===============================================================================
[FAIL]
Traceback (most recent call last):
  File "/tmp/x/tests/unit/test_x.py", line 9, in test_deep
    self.assertEqual(a, b)
twisted.trial.unittest.FailTest: 'PENDING' != 'CANCELLED'

tests.unit.test_x.CascadeTests.test_deep
-------------------------------------------------------------------------------
Ran 1 tests in 0.004s

FAILED (failures=1, successes=3)
"""

TRIAL_IMPORT_ERROR = """tests.unit.test_y ...                                       [ERROR]

===============================================================================
[ERROR]
Traceback (most recent call last):
  File "/tmp/x/titan/core/scheduler.py", line 3, in <module>
builtins.NameError: name 'oops' is not defined

tests.unit.test_y
-------------------------------------------------------------------------------
Ran 1 tests in 0.004s

FAILED (errors=1)
"""


class ParseListTests(SynchronousTestCase):
    def test_a_mutation_with_defaults(self) -> None:
        (m,) = mutate.parse_list(ONE)
        self.assertEqual(m.id, "cascade-one-level")
        self.assertEqual(m.file, "titan/core/scheduler.py")
        self.assertEqual(m.breaks, "a cascade stops after one level")
        self.assertEqual(m.find, "self._cascading.append(failed)")
        self.assertEqual(m.replace, "pass")
        self.assertEqual(m.tests, ("tests.unit",))
        self.assertEqual(m.timeout, 120.0)

    def test_groups_expand_in_order_without_repeats(self) -> None:
        text = ('[groups]\ncore = ["tests.unit.test_a", "tests.unit.test_b"]\n' + ONE
                + 'tests = ["tests.unit.test_b", "@core", "tests.unit.test_c"]\ntimeout = 5\n')
        (m,) = mutate.parse_list(text)
        self.assertEqual(m.tests, ("tests.unit.test_b", "tests.unit.test_a",
                                   "tests.unit.test_c"))
        self.assertEqual(m.timeout, 5.0)

    def assertRefused(self, text: str, *words: str) -> None:
        with self.assertRaises(mutate.ListError) as caught:
            mutate.parse_list(text, "list.toml")
        for word in words:
            self.assertIn(word, str(caught.exception))

    def test_a_missing_key_is_named(self) -> None:
        self.assertRefused(ONE.replace('breaks = "a cascade   stops after one level"\n', ""),
                           "cascade-one-level", "'breaks' is required")

    def test_a_misspelt_key_is_refused_not_ignored(self) -> None:
        self.assertRefused(ONE + 'test = ["tests.unit.test_a"]\n', "unknown key(s) test")

    def test_an_id_used_twice(self) -> None:
        self.assertRefused(ONE + ONE, "used twice")

    def test_find_is_one_line(self) -> None:
        self.assertRefused(ONE.replace('find = "    self._cascading.append(failed)  "',
                                       'find = "a\\nb"'), "'find' is one line")

    def test_a_replacement_that_changes_nothing(self) -> None:
        self.assertRefused(ONE.replace('replace = "pass"',
                                       'replace = "self._cascading.append(failed)"'),
                           "same as 'find'")

    def test_a_file_outside_the_copied_tree(self) -> None:
        self.assertRefused(ONE.replace("titan/core/scheduler.py", "../etc/passwd"), "'file'")
        self.assertRefused(ONE.replace("titan/core/scheduler.py", "setup.cfg"), "'file'")

    def test_an_unknown_group(self) -> None:
        self.assertRefused(ONE + 'tests = ["@nope"]\n', "no group 'nope'")

    def test_not_toml(self) -> None:
        self.assertRefused("[[mutation]\nid = ", "list.toml")

    def test_an_empty_list(self) -> None:
        self.assertRefused("# nothing\n", "no [[mutation]]")

    def test_the_project_list_reads(self) -> None:
        mutations = mutate.load_list(mutate.DEFAULT_LIST)
        self.assertGreaterEqual(len(mutations), 25)
        for m in mutations:
            self.assertTrue(m.tests and all(t.startswith("tests.") for t in m.tests), m.id)


class ApplyTests(SynchronousTestCase):
    def test_the_line_is_replaced_keeping_its_indentation(self) -> None:
        changed, line = mutate.apply(SOURCE, "return 1", "return 3")
        self.assertEqual(line, 3)
        self.assertEqual(changed, SOURCE.replace("        return 1\n", "        return 3\n"))

    def test_surrounding_whitespace_of_find_is_ignored(self) -> None:
        changed, line = mutate.apply(SOURCE, "   if x:  ", "if not x:")
        self.assertEqual((line, changed.splitlines()[1]), (2, "    if not x:"))

    def test_windows_line_ends_are_kept(self) -> None:
        changed, _ = mutate.apply(SOURCE.replace("\n", "\r\n"), "return 2", "return 0")
        self.assertEqual(changed, SOURCE.replace("\n", "\r\n").replace("return 2", "return 0"))

    def test_part_of_a_line_is_not_a_match(self) -> None:
        with self.assertRaises(mutate.Stale) as caught:
            mutate.apply(SOURCE, "return", "pass")
        self.assertEqual(str(caught.exception), "line not found")

    def test_a_line_found_twice_is_stale_naming_both(self) -> None:
        with self.assertRaises(mutate.Stale) as caught:
            mutate.apply(SOURCE + "    return 1\n", "return 1", "return 0")
        self.assertEqual(str(caught.exception), "line found 2 times (lines 3, 5)")


class StaleTests(SynchronousTestCase):
    """A mutation whose line has gone is reported STALE, runs nothing and fails the tool."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(__import__("shutil").rmtree, self.tmp)
        (self.tmp / "base" / "titan").mkdir(parents=True)
        (self.tmp / "base" / "titan" / "m.py").write_text(SOURCE)

    def mutation(self, find: str, replace: str = "pass") -> object:
        return mutate.Mutation(id="m", file="titan/m.py", breaks="b", find=find,
                               replace=replace, tests=("tests.unit.test_m",))

    def test_a_line_that_is_gone(self) -> None:
        result = mutate.run_mutation(self.mutation("return 9"), self.tmp / "base", self.tmp)
        self.assertEqual((result.status, result.note), ("STALE", "line not found"))
        self.assertFalse((self.tmp / "m").exists())  # no copy was made, nothing ran
        self.assertEqual(mutate.exit_status([result]), 1)
        self.assertIn("STALE", mutate.table([result]))
        self.assertIn("line not found", mutate.table([result]))

    def test_a_file_that_is_gone(self) -> None:
        m = mutate.Mutation(id="m", file="titan/gone.py", breaks="b", find="x", replace="y")
        result = mutate.run_mutation(m, self.tmp / "base", self.tmp)
        self.assertEqual((result.status, result.note), ("STALE", "no file titan/gone.py"))

    def test_a_change_that_does_not_compile_is_invalid_not_killed(self) -> None:
        result = mutate.run_mutation(self.mutation("if x:", "if x"), self.tmp / "base",
                                     self.tmp)
        self.assertEqual((result.status, result.line), ("INVALID", 2))
        self.assertEqual(mutate.exit_status([result]), 1)

    def test_no_test_module_to_run_is_a_survivor(self) -> None:
        result = mutate.run_mutation(self.mutation("return 1"), self.tmp / "base", self.tmp)
        self.assertEqual(result.status, "SURVIVED")
        self.assertIn("missing: tests.unit.test_m", result.note)


class OutcomeTests(SynchronousTestCase):
    def test_the_first_failing_test_is_named(self) -> None:
        self.assertEqual(mutate.first_failure(TRIAL_FAIL),
                         "tests.unit.test_x.CascadeTests.test_deep")
        self.assertEqual(mutate.classify(1, TRIAL_FAIL, False, 60),
                         ("KILLED", "tests.unit.test_x.CascadeTests.test_deep", ""))

    def test_an_error_is_named_as_one(self) -> None:
        self.assertEqual(mutate.first_failure(TRIAL_IMPORT_ERROR), "tests.unit.test_y (error)")

    def test_passing_tests_mean_the_mutation_survived(self) -> None:
        self.assertEqual(mutate.classify(0, "PASSED (successes=3)\n", False, 60),
                         ("SURVIVED", None, ""))

    def test_a_timeout_is_a_kill_and_says_so(self) -> None:
        status, by, note = mutate.classify(-9, "", True, 60)
        self.assertEqual((status, by, note),
                         ("KILLED", None, "by timeout: still running after 60s"))
        result = mutate.Result(mutate.Mutation("m", "titan/m.py", "b", "x", "y"), status,
                               3, by, note, 60.2)
        self.assertIn("by timeout", mutate.table([result]))
        self.assertIn("1 killed (1 by timeout), 0 survived, 0 stale",
                      mutate.summary([result], 61))
        self.assertEqual(mutate.exit_status([result]), 0)

    def test_a_failure_without_a_test_name_is_still_a_kill(self) -> None:
        status, by, note = mutate.classify(2, "Segmentation fault\n", False, 60)
        self.assertEqual((status, by), ("KILLED", None))
        self.assertIn("trial exited 2", note)

    def test_one_survivor_fails_the_tool(self) -> None:
        m = mutate.Mutation("m", "titan/m.py", "b", "x", "y")
        killed = mutate.Result(m, "KILLED", 3, "t", "", 1.0)
        survived = mutate.Result(m, "SURVIVED", 3, None, "", 1.0)
        self.assertEqual(mutate.exit_status([killed]), 0)
        self.assertEqual(mutate.exit_status([killed, survived]), 1)


class PresentModulesTests(SynchronousTestCase):
    def test_modules_and_packages_that_exist(self) -> None:
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(__import__("shutil").rmtree, tmp)
        (tmp / "tests" / "unit").mkdir(parents=True)
        (tmp / "tests" / "unit" / "__init__.py").write_text("")
        (tmp / "tests" / "unit" / "test_a.py").write_text("")
        self.assertEqual(mutate.present_modules(tmp, ["tests.unit.test_a", "tests.unit",
                                                      "tests.unit.test_b"]),
                         (["tests.unit.test_a", "tests.unit"], ["tests.unit.test_b"]))
