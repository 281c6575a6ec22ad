"""QA decomposition quality score QS and the P90 filter, on hand-made records."""

import numpy as np
import pytest

from stratarl.synth.qa import filter_records, percentile_threshold, record_from_dict, score_record


def rec(rid, answer, *steps):
    trace = [{"id": i, "hop": h, "sub_question": q, "sub_answer": a, "depends_on": d, "is_parallel": p,
              "needs_tool": True} for i, h, q, a, d, p in steps]
    return record_from_dict({"id": rid, "main_question": "Q?", "main_answer": answer, "trace": trace})


GOOD = rec("good", "412000",
           (1, 1, "What is the capital of Velmaria?", "Torika", [], False),
           (2, 2, "What is the population of Torika?", "412000", [1], False))
# sub-question 1 asks two things (not atomic) and its answer "Torika, 412000" is not in sub-question 2
COMPOUND = rec("compound", "412000",
               (1, 1, "What is the capital of Velmaria and what is its population?", "Torika, 412000", [], False),
               (2, 2, "What is the population of Torika?", "412000", [1], False))
# 1 depends on a missing id 3 with hop 2; 2 depends on 1 (hop 2) but says hop 1: both inconsistent
BROKEN = rec("broken", "1962",
             (1, 2, "Who wrote The Amber Orchard?", "Mira Dalen", [3], False),
             (2, 1, "In what year was Mira Dalen born?", "1962", [1], False))
# main answer matches no sink
INCOMPLETE = rec("incomplete", "kestor crown",
                 (1, 1, "What is the capital of Kestoria?", "Brenmoor", [], False),
                 (2, 1, "What is the population of Brenmoor?", "98000", [], True))
# 3 sub-questions; the sink (3) is reachable from 2 and 3 only: completeness 2/3
PARTIAL = rec("partial", "Torika",
              (1, 1, "What is the capital of Kestoria?", "Brenmoor", [], False),
              (2, 1, "What is the population of Torika?", "412000", [], True),
              (3, 2, "Which city has 412000 people?", "Torika", [2], False))


@pytest.mark.parametrize("record, dims", [
    (GOOD, (1, 1, 1, 1)),
    (COMPOUND, (1, 0.5, 0.5, 1)),   # QS 0.75
    (BROKEN, (0, 1, 0.5, 1)),       # QS 0.625
    (INCOMPLETE, (1, 1, 1, 0)),     # QS 0.75
    (PARTIAL, (1, 1, 1, 2 / 3)),    # QS 11/12
])
def test_qs_dimensions_by_hand(record, dims):
    s = score_record(record)
    assert list(s.dims.values()) == pytest.approx(list(dims))
    assert s.qs == pytest.approx(sum(dims) / 4)


def test_parallel_step_must_not_depend_on_its_predecessor():
    bad = rec("p", "x", (1, 1, "What is a?", "a1", [], False), (2, 2, "What is a1 of x?", "x", [1], True))
    assert score_record(bad).dims["dependency_consistency"] == 0.5


def test_p90_threshold_and_filter():
    # numpy linear percentile of [0.2, 0.4, 0.6, 0.8, 1.0]: position 0.9 * 4 = 3.6 -> 0.8 + 0.6 * 0.2 = 0.92
    assert percentile_threshold([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(0.92)
    # 11 values 0.0 .. 1.0: position 9 -> 0.9, so 0.9 and 1.0 pass
    assert percentile_threshold(list(np.linspace(0, 1, 11))) == pytest.approx(0.9)
    # QS: GOOD 1, COMPOUND .75, BROKEN .625, INCOMPLETE .75, PARTIAL .9167 -> sorted position 3.6 between
    # .9167 and 1: .9167 + .6 * .0833 = .9667; only GOOD passes
    kept, scores, threshold = filter_records([GOOD, COMPOUND, BROKEN, INCOMPLETE, PARTIAL])
    assert threshold == pytest.approx(11 / 12 + 0.6 * (1 / 12))
    assert [r.id for r in kept] == ["good"]
    assert [round(s.qs, 4) for s in scores] == [1.0, 0.75, 0.625, 0.75, 0.9167]
