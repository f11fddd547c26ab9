"""Generate the shipped customer-support dataset (deterministic, no network).

Run from the repository root:  python experiments/data/generate.py

Writes, next to this file:
  support_sft.jsonl        SFT conversations (`messages` format)
  support_prefs.jsonl      preference pairs (prompt / chosen / rejected): rejected is
                           curt (a quarter), off-topic (a quarter), or the same reply
                           promising only an update where chosen commits to a result
  support_feedback.jsonl   unpaired good/bad feedback (prompt / completion / label)
  support_eval.jsonl       held-out eval prompts with reference replies
  support_intent_mc.jsonl  multiple-choice intent task (query / choices / gold)

`runner/assets/tiny_corpus.txt`, the text the embedded `tiny` model's tokenizer and
pretraining read, is written too (see `pretraining_corpus`).

Every customer message is built from an intent, a phrasing template and slot values
(name, product, order number, amount, days). Replies combine a greeting with a
sentence naming the message's topic, an acknowledgement, a concrete action and a
timeline, each drawn from several phrasings, so no single template can be memorised.
Train and eval files never share a prompt: the eval files draw from products and
customer names the training files never use.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20261123
HERE = Path(__file__).resolve().parent

TRAIN_NAMES = [
    "Alice",
    "Bob",
    "Carmen",
    "Deepak",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Maya",
    "Nikolai",
    "Olu",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tara",
]
EVAL_NAMES = ["Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe"]


def _made_up_names(n: int) -> list[str]:
    """Names built from syllables, so a model learns to copy names rather than memorise
    twenty of them (the held-out names are never among them)."""
    rng = random.Random(SEED + 1)
    onsets = [*"bdfghjklmnprstvz", "ch", "sh", "th"]
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(onsets) + rng.choice("aeiou") for _ in range(rng.randint(2, 3)))
        name = name.capitalize()
        if name not in out and name not in EVAL_NAMES and name not in TRAIN_NAMES:
            out.append(name)
    return out


MANY_NAMES = TRAIN_NAMES + _made_up_names(400)
TRAIN_PRODUCTS = [
    "wireless headphones",
    "coffee grinder",
    "standing desk",
    "running shoes",
    "air purifier",
    "smart watch",
    "backpack",
    "desk lamp",
    "yoga mat",
    "blender",
    "phone case",
    "kettle",
    "office chair",
    "bluetooth speaker",
    "winter jacket",
    "electric toothbrush",
]
# for the pretraining corpus: more products, none of the held-out ones
MANY_PRODUCTS = TRAIN_PRODUCTS + [
    f"{adj} {noun}"
    for adj in ["red", "steel", "folding", "smart", "travel", "kids'", "cordless"]
    for noun in ["lamp", "backpack", "scale", "fan", "drill", "watch", "mug", "heater"]
]
EVAL_PRODUCTS = ["robot vacuum", "espresso machine", "e-reader", "camping tent", "rice cooker"]

INTENTS: dict[str, dict[str, list[str]]] = {
    "refund": {
        "ask": [
            "I returned the {product} two weeks ago and still have no refund of ${amount}.",
            "Where is my refund for order {order}? It was ${amount} for a {product}.",
            "Hi, I want my money back for the {product}, it does not work as advertised.",
            "Can you refund order {order}? The {product} was not what I expected.",
        ],
        "action": [
            "I have issued a refund of ${amount} for order {order}",
            "I have escalated your refund for order {order} to our billing team",
            "I have approved the return of your {product} and started a ${amount} refund",
        ],
        "curt": ["Refunds take time.", "Check your bank.", "We already processed it, probably."],
    },
    "shipping_delay": {
        "ask": [
            "My {product} (order {order}) was supposed to arrive {days} days ago. Where is it?",
            "Order {order} is late. I need the {product} before the weekend.",
            "The tracking for my {product} has not updated in {days} days.",
            "Why is my order {order} still not shipped?",
        ],
        "action": [
            "I have contacted the carrier about order {order} and requested priority handling",
            "I have reshipped your {product} with express delivery at no cost",
            "I have opened a trace with the courier for order {order}",
        ],
        "curt": ["Shipping is out of our hands.", "Just wait a bit longer.", "It will come."],
    },
    "password_reset": {
        "ask": [
            "I cannot log in, the password reset email never arrives.",
            "The reset link says it expired. How do I get into my account?",
            "I forgot my password and the reset page shows an error.",
            "My account password stopped working after the update.",
        ],
        "action": [
            "I have sent a new reset link to the email on your account",
            "I have cleared the stuck reset request so you can request a fresh link",
            "I have verified your identity and unlocked the password reset for your account",
        ],
        "curt": ["Try again later.", "Use the forgot password button.", "Not our problem."],
    },
    "billing_error": {
        "ask": [
            "I was charged twice for order {order}, ${amount} each time.",
            "My card shows a charge of ${amount} I do not recognise.",
            "You billed me ${amount} for the {product} but the price was lower.",
            "There is a wrong amount on my invoice for order {order}.",
        ],
        "action": [
            "I have reversed the duplicate charge of ${amount} on order {order}",
            "I have corrected the invoice for order {order} and refunded the difference",
            "I have flagged the ${amount} charge for our payments team to reverse",
        ],
        "curt": ["The charge is correct.", "Talk to your bank.", "Billing is final."],
    },
    "cancel_subscription": {
        "ask": [
            "Please cancel my subscription, I no longer need it.",
            "How do I stop the monthly charge of ${amount}?",
            "I want to cancel before the next renewal.",
            "Cancel my plan, I tried in the app and it did not work.",
        ],
        "action": [
            "I have cancelled your subscription so no further charges will be made",
            "I have turned off auto-renewal on your plan",
            "I have cancelled the plan and refunded this month's ${amount}",
        ],
        "curt": ["Do it in the app.", "Cancellations are not possible now.", "Fine."],
    },
    "damaged_item": {
        "ask": [
            "The {product} arrived broken. Order {order}.",
            "My {product} was damaged in the box, the casing is cracked.",
            "The {product} from order {order} stopped working after {days} days.",
            "Received a scratched {product}, this is unacceptable.",
        ],
        "action": [
            "I have arranged a free replacement {product} for order {order}",
            "I have sent you a prepaid return label for the damaged {product}",
            "I have logged the damage and approved a replacement for your {product}",
        ],
        "curt": ["Items are checked before shipping.", "Send photos.", "That happens."],
    },
    "wrong_item": {
        "ask": [
            "I ordered a {product} but received something else. Order {order}.",
            "Order {order} contained the wrong colour {product}.",
            "This is not the {product} I paid for.",
            "You sent me someone else's package instead of my {product}.",
        ],
        "action": [
            "I have shipped the correct {product} for order {order}",
            "I have arranged a pickup of the wrong item and sent the right {product}",
            "I have corrected order {order} and dispatched your {product}",
        ],
        "curt": ["Keep it.", "Our warehouse does not make mistakes.", "Order again."],
    },
    "account_locked": {
        "ask": [
            "My account is locked after too many login attempts.",
            "It says my account is suspended. Why?",
            "I am locked out and need access to download my invoices.",
            "Your security system blocked my account for no reason.",
        ],
        "action": [
            "I have unlocked your account after checking the recent sign-in attempts",
            "I have lifted the security hold on your account",
            "I have restored access to your account and reset the attempt counter",
        ],
        "curt": ["Wait for it to unlock.", "Security rules apply.", "Create a new account."],
    },
}

# How a fine-tuned agent names the topic of a message in its reply's first sentence (the
# pretraining corpus never does: SFT teaches it, and support_intent_mc measures it).
TOPICS = {
    "refund": "your refund",
    "shipping_delay": "your late delivery",
    "password_reset": "your password reset",
    "billing_error": "a billing error",
    "cancel_subscription": "cancelling your subscription",
    "damaged_item": "a damaged item",
    "wrong_item": "receiving the wrong item",
    "account_locked": "your locked account",
}
GREETINGS = ["Hi {name},", "Hello {name},", "Dear {name},", "Hi there {name},"]
ACKS = [
    "I am sorry for the trouble this has caused.",
    "Thank you for letting us know, and I apologise for the inconvenience.",
    "I understand how frustrating this must be.",
    "I am sorry to hear about this, and thank you for your patience.",
]
TIMELINES = [
    "You should see this within {days} business days.",
    "This will be completed within {hours} hours.",
    "Expect an update from us by email within {days} days.",
    "It should take effect within {hours} hours, and I will follow up to confirm.",
]
UPDATE_ONLY = TIMELINES[2]  # promises news, not a result: the rejected side of half the pairs
CLOSINGS = ["Best regards, the support team.", "Kind regards, Support.", "Thanks, Support."]
SYSTEM = "You are a polite, helpful customer-support agent."


def _slots(rng: random.Random, names: list[str], products: list[str]) -> dict[str, object]:
    return {
        "name": rng.choice(names),
        "product": rng.choice(products),
        "order": f"#{rng.randint(10000, 99999)}",
        "amount": f"{rng.randint(9, 400)}.{rng.randint(0, 99):02d}",
        "days": rng.randint(2, 9),
        "hours": rng.choice([12, 24, 48, 72]),
    }


def topic_line(greeting: str, intent: str) -> str:
    return f"{greeting} I see this is about {TOPICS[intent]}."


def _good_reply(
    rng: random.Random, intent: str, s: dict[str, object], *, topic: bool = True
) -> str:
    greeting = rng.choice(GREETINGS).format(**s)
    parts = [
        topic_line(greeting, intent) if topic else greeting,
        rng.choice(ACKS),
        rng.choice(INTENTS[intent]["action"]).format(**s) + ".",
        rng.choice(TIMELINES).format(**s),
        rng.choice(CLOSINGS),
    ]
    return " ".join(parts)


def _bad_reply(rng: random.Random, intent: str, s: dict[str, object]) -> str:
    return rng.choice(INTENTS[intent]["curt"])


def _off_topic_reply(rng: random.Random, intent: str, s: dict[str, object]) -> str:
    """Polite and complete, but about another problem than the customer's."""
    other = rng.choice([i for i in sorted(INTENTS) if i != intent])
    return _good_reply(rng, other, s)


def _timeline_pair(
    rng: random.Random, pair: dict[str, str], s: dict[str, object]
) -> dict[str, str]:
    """The same on-topic reply twice: chosen commits to when the problem is solved,
    rejected only promises an update. SFT saw both kinds of timeline equally often, so its
    model has no preference here: one that only the alignment stage can teach."""
    reply = pair["chosen"]
    current = next(t.format(**s) for t in TIMELINES if t.format(**s) in reply)
    committed = [t.format(**s) for t in TIMELINES if t != UPDATE_ONLY]
    chosen = current if current in committed else rng.choice(committed)
    return {
        "prompt": pair["prompt"],
        "chosen": reply.replace(current, chosen),
        "rejected": reply.replace(current, UPDATE_ONLY.format(**s)),
    }


def _unique_examples(
    rng: random.Random, n: int, names: list[str], products: list[str], seen: set[str]
) -> list[tuple[str, str, dict[str, object]]]:
    out = []
    intents = sorted(INTENTS)
    while len(out) < n:
        intent = intents[len(out) % len(intents)]
        s = _slots(rng, names, products)
        ask = rng.choice(INTENTS[intent]["ask"])
        ref = "" if "{order}" in ask else f" (account {s['order']})"
        prompt = f"{ask.format(**s)}{ref} - {s['name']}"
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append((intent, prompt, s))
    return out


def pretraining_corpus(rng: random.Random, seen: set[str]) -> str:
    """The `tiny` model's tokenizer and pretraining text: support transcripts.

    Plain text, not chat-formatted; prompts that no shipped file uses (the held-out names
    and products do occur, as words a pretrained model knows); agents never name the
    topic; a quarter of the replies are curt — so
    the pretrained model knows the domain's language, and SFT still has a format, a habit
    (naming the topic) and a preference to teach. Documents are separated by blank lines.
    """
    docs = [SYSTEM]
    for k, (intent, prompt, s) in enumerate(
        _unique_examples(rng, 3000, MANY_NAMES + EVAL_NAMES, MANY_PRODUCTS + EVAL_PRODUCTS, seen)
    ):
        curt = k % 4 == 3
        reply = _bad_reply(rng, intent, s) if curt else _good_reply(rng, intent, s, topic=False)
        docs.append(f"Customer: {prompt}\nAgent: {reply}")
    return "\n\n".join(docs) + "\n"


def _write(name: str, rows: list[dict[str, object]]) -> None:
    with open(HERE / name, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    rng = random.Random(SEED)
    seen: set[str] = set()
    train = _unique_examples(rng, 960, MANY_NAMES, TRAIN_PRODUCTS, seen)
    held_out = _unique_examples(rng, 240, EVAL_NAMES, EVAL_PRODUCTS, seen)

    sft = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": p},
                {"role": "assistant", "content": _good_reply(rng, i, s)},
            ]
        }
        for i, p, s in train[:400]
    ]
    # half the rejected replies are curt, half polite but off-topic: a preference (and a
    # judge) has to read the customer's message, not only the reply's tone
    prefs = [
        {
            "prompt": p,
            "chosen": _good_reply(rng, i, s),
            "rejected": (_bad_reply if k % 2 else _off_topic_reply)(rng, i, s),
        }
        for k, (i, p, s) in enumerate(train[400:700])
    ]
    # half the pairs carry a preference SFT does not teach (their own RNG: every other
    # file stays as it was); a quarter curt, a quarter off-topic remain
    pair_rng = random.Random(SEED + 1)
    for k, (_, _, s) in enumerate(train[400:700]):
        if k % 4 in (1, 2):
            prefs[k] = _timeline_pair(pair_rng, prefs[k], s)
    feedback = []
    for k, (i, p, s) in enumerate(train[700:960]):
        good = k % 2 == 0
        reply = _good_reply(rng, i, s) if good else _bad_reply(rng, i, s)
        feedback.append({"prompt": p, "completion": reply, "label": good})
    evals = [
        {"prompt": p, "reference": _good_reply(rng, i, s), "intent": i}
        for i, p, s in held_out[:120]
    ]
    labels = sorted(INTENTS)
    mc = []
    for i, p, s in held_out[120:240]:
        # scored under the model's chat template: which topic does the reply open with?
        greeting = GREETINGS[0].format(**s)
        choices = [topic_line(greeting, label) for label in labels]
        mc.append({"query": p, "choices": choices, "gold": labels.index(i), "intent": i})
    _write("support_sft.jsonl", sft)
    _write("support_prefs.jsonl", prefs)
    _write("support_feedback.jsonl", feedback)
    _write("support_eval.jsonl", evals)
    _write("support_intent_mc.jsonl", mc)
    assets = HERE.parent.parent / "runner" / "assets" / "tiny_corpus.txt"
    assets.write_text(pretraining_corpus(rng, seen), encoding="utf-8")
    print(
        f"wrote {len(sft)} sft, {len(prefs)} prefs, {len(feedback)} feedback, "
        f"{len(evals)} eval, {len(mc)} intent rows to {HERE}"
    )


if __name__ == "__main__":
    main()
