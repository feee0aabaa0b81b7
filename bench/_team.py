"""bench/loop.py --team: a review team on the loop (issue 12, item 5). Not a benchmark itself.

Three simulated reviewers, one of them careless (wrong on 15 % of their decisions), an admin who
settles conflicts correctly, and the rules verge applies (store/overlap.py, store/gold.py,
store/bulk.py):

* overlap N: each routed task is labeled by N distinct reviewers (round robin); agreeing labels
  are final, a disagreement costs the admin one action and the admin's class is final;
* gold: that share of claims hand a reviewer a gold item instead (an action that teaches the
  model nothing new); below the accuracy bar after K gold answers a reviewer is flagged and all
  of their labels leave training;
* bulk: after labeling a task the reviewer sees its 24 nearest images (store.neighbours, the same
  FAISS index the page uses), keeps those they judge to be of the same class as the task and
  deselects the rest (the careful: the neighbours whose true class matches; the careless: the
  same selection, but the decision is wrong 15 % of the time, for the whole selection at once),
  and labels them in one action. A bulk label on an image with a routed task is one of its N
  reviews; on any other image it is a plain label, which trains as it is.

An action is one label decision (a key press for one image, or one bulk action however many
images it labels), a gold answer, or an adjudication. Selection key presses are counted apart.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from workers.routing import RoutingPolicy, route

CARELESS_ERROR = 0.15


@dataclass
class Config:
    overlap: int = 2
    gold: bool = True
    bulk: bool = True
    gold_fraction: float = 0.05
    gold_min_accuracy: float = 0.9
    gold_min_items: int = 10
    k: int = 24


@dataclass
class Team:
    y: np.ndarray
    cfg: Config
    rng: np.random.Generator
    labels: dict = field(default_factory=lambda: defaultdict(dict))   # item -> {reviewer: cls}
    final: dict = field(default_factory=dict)                          # item -> cls (settled)
    task_reviews: dict = field(default_factory=lambda: defaultdict(dict))  # routed item -> {r: cls}
    gold_items: set = field(default_factory=set)
    gold_seen: dict = field(default_factory=lambda: defaultdict(set))
    gold_tally: dict = field(default_factory=lambda: defaultdict(Counter))
    flagged: set = field(default_factory=set)
    actions: int = 0
    keys: int = 0
    turn: int = 0

    # --- a reviewer's decision: 0 and 1 careful, 2 careless
    def decide(self, reviewer: int, item: int) -> int:
        truth = int(self.y[item])
        if reviewer == 2 and self.rng.random() < CARELESS_ERROR:
            return 1 - truth
        return truth

    def next_reviewer(self, exclude) -> int:
        for _ in range(3):
            r = self.turn % 3
            self.turn += 1
            if r not in exclude:
                return r
        raise RuntimeError("no reviewer left")

    def maybe_gold(self, reviewer: int) -> None:
        if not self.cfg.gold or self.rng.random() >= self.cfg.gold_fraction:
            return
        left = [g for g in self.gold_items if g not in self.gold_seen[reviewer]]
        if not left:
            return
        g = left[int(self.rng.integers(len(left)))]
        self.gold_seen[reviewer].add(g)
        self.actions += 1
        t = self.gold_tally[reviewer]
        t["n"] += 1
        t["right"] += int(self.decide(reviewer, g) == int(self.y[g]))
        if t["n"] >= self.cfg.gold_min_items and t["right"] / t["n"] < self.cfg.gold_min_accuracy:
            self.flagged.add(reviewer)

    def review(self, item: int, reviewer: int, cls: int) -> None:
        """One review of a routed task (a key press or part of a bulk action)."""
        reviews = self.task_reviews[item]
        reviews[reviewer] = cls
        self.labels[item][reviewer] = cls
        if len(reviews) >= self.cfg.overlap and item not in self.final:
            if len(set(reviews.values())) == 1:
                self.final[item] = cls
            else:
                self.actions += 1  # the admin adjudicates, correctly
                self.final[item] = int(self.y[item])

    def work_task(self, item: int, index, X, routed: set) -> None:
        done = set(self.task_reviews[item])
        while len(self.task_reviews[item]) < self.cfg.overlap and item not in self.final:
            r = self.next_reviewer(done)
            done.add(r)
            self.maybe_gold(r)
            wrong_batch = r == 2 and self.rng.random() < CARELESS_ERROR
            truth = int(self.y[item])
            cls = 1 - truth if wrong_batch else truth
            self.actions += 1
            self.review(item, r, cls)
            if self.cfg.bulk:
                self.bulk(item, r, cls, truth, index, X, routed)

    def bulk(self, item, r, cls, truth, index, X, routed) -> None:
        shown = [i for i, _ in index.search(X[item], self.cfg.k, exclude=item + 1)]
        shown = [i - 1 for i in shown]
        pick = [i for i in shown if int(self.y[i]) == truth and r not in self.labels[i]
                and i not in self.final and i not in self.gold_items]
        if not pick:
            return
        self.actions += 1
        self.keys += 1 + (len(shown) - len(pick))  # select all, deselect the others
        for i in pick:
            if i in routed:
                self.review(i, r, cls)
            else:
                self.labels[i][r] = cls

    def training(self) -> dict[int, int]:
        """What retraining would use: final labels; plain labels by majority; gold classes;
        flagged reviewers' labels left out."""
        out = {}
        for item, by in self.labels.items():
            if item in self.final:
                out[item] = self.final[item]
                continue
            if item in self.task_reviews:
                continue  # still waiting for its reviewers
            votes = Counter(c for r, c in by.items() if r not in self.flagged)
            ranked = votes.most_common()
            if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
                out[item] = ranked[0][0]
        for g in self.gold_items:
            out[g] = int(self.y[g])
        return out

    def careless_wrong(self) -> tuple[int, int]:
        """(wrong labels the careless reviewer gave, of those the ones training uses)."""
        train = self.training()
        wrong = used = 0
        for item, by in self.labels.items():
            if 2 in by and by[2] != int(self.y[item]):
                wrong += 1
                if 2 in self.flagged:
                    continue
                if item in self.final:
                    used += int(self.final[item] == by[2])
                elif item in train and train[item] == by[2]:
                    used += 1
        return wrong, used


def simulate_team(cfg: Config, X, y, zs, test_X, test_y, seed_n, step, budget_actions, seed,
                  target, accuracy):
    """Rounds as bench/loop.py's: retrain on what training would use, route the next ``step``
    tasks, let the team work them. Returns (curve of (actions, accuracy), team)."""
    from store.neighbours import NeighbourIndex

    rng = np.random.default_rng(seed)
    team = Team(y, cfg, rng)
    n = len(y)
    index = NeighbourIndex("sim")
    index.load(np.arange(1, n + 1, dtype=np.int64), X.astype(np.float32))
    if cfg.gold:
        team.gold_items = set(int(i) for i in rng.choice(n, 50, replace=False))
    routed: set = set()
    policy = RoutingPolicy(band=(0.4, 0.6), audit_fraction=0.0)
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    first = [int(i) for i in rng.choice(n, seed_n, replace=False)]
    routed.update(first)
    for i in first:
        team.work_task(i, index, X, routed)
    curve = []
    while True:
        train = team.training()
        idx = np.array(sorted(train), dtype=int)
        ytrain = y.copy()
        ytrain[idx] = [train[i] for i in idx]
        acc, head = accuracy(X, ytrain, idx, test_X, test_y)
        curve.append((team.actions, acc, len(train)))
        if acc >= target or team.actions >= budget_actions:
            return curve, team
        pool = np.array([i for i in range(n) if i not in routed and i not in train])
        if len(pool) == 0:
            return curve, team
        if head is None:
            pick = rng.choice(pool, min(step, len(pool)), replace=False)
        else:
            p = head.predict(X[pool])[:, 1]
            decisions = [route(float(p[j]), float(zs[i]), shas[i], policy) for j, i in enumerate(pool)]
            order = sorted(range(len(pool)), key=lambda j: (not decisions[j].routed, -decisions[j].priority))
            pick = pool[order[:step]]
        routed.update(int(i) for i in pick)
        for i in pick:
            team.work_task(int(i), index, X, routed)
