"""Reflections: the offline template, the teacher prompt, cleaning the teacher's answer, forced replies."""

from stratarl.calibrate.deviation import StepComparison
from stratarl.calibrate.step_value import forced_response
from stratarl.calibrate.trajectories import (
    clean_reflection,
    reflection_messages,
    template_reflection,
    write_reflections,
)
from stratarl.types import Step

DEV = StepComparison(t=2, expert_action="take knife", agent_action="examine oven", agent_value=0.0,
                     expert_value=1.0, previous_expert_value=1.0, agent_won=False)


class FixedTeacher:
    def __init__(self, answer):
        self.answer, self.seen = answer, []

    def chat(self, messages, params):
        self.seen.append(messages)
        return self.answer


def history():
    return [Step(prompt_ids=[], response_ids=[], logprobs=[], text="", action="look around", anchor="Kitchen.",
                 observation="You see a knife."),
            Step(prompt_ids=[], response_ids=[], logprobs=[], text="", action="examine oven", anchor="You see a knife.",
                 observation="An oven.")]


def test_template_names_the_mistake_and_the_correct_action():
    text = template_reflection("examine oven", "take knife")
    assert text == ("My last action, 'examine oven', was a mistake: it does not bring me closer to the goal. "
                    "The right action here is 'take knife'.")
    assert template_reflection("", "take knife").startswith("My last reply was not a valid action: ")


def test_teacher_prompt_holds_the_history_and_the_expert_action():
    (msg,) = reflection_messages("Cook a meal.", history(), "take knife")
    assert msg["role"] == "user"
    body = msg["content"]
    assert body.startswith("Task: Cook a meal.\nObservation: Kitchen.\nAction: look around\nObservation: You see a knife.")
    assert "Action: examine oven\nObservation: An oven." in body
    assert "The next step ground truth action is: take knife." in body and "last non-optimal action" in body


def test_teacher_answers_are_cleaned_and_an_empty_one_falls_back_to_the_template():
    assert clean_reflection("Thought: The oven is useless now.\nAction: take knife") == "The oven is useless now."
    assert clean_reflection("<think> I need the knife </think><action>take knife</action>") == "I need the knife"
    assert clean_reflection("x" * 1000, max_chars=10) == "x" * 10
    teacher = FixedTeacher("Thought: The knife is what I need.")
    cases = [("Cook a meal.", history(), DEV)]
    assert write_reflections(cases, teacher) == [("The knife is what I need.", "teacher")]
    assert len(teacher.seen) == 1
    assert write_reflections(cases, FixedTeacher("  ")) == [(template_reflection("examine oven", "take knife"), "template")]
    assert write_reflections(cases, None)[0][1] == "template"


def test_forced_replies_follow_the_prompt_prime():
    assert forced_response("take knife", None, "") == "<action>take knife</action>"
    assert forced_response("take knife", "why", "") == "<think>why</think><action>take knife</action>"
    assert forced_response("take knife", None, "<action>") == "take knife</action>"
    assert forced_response("take knife", "why", "<think>") == "why</think><action>take knife</action>"
    assert forced_response("take knife", None, "<think>") == "</think><action>take knife</action>"
