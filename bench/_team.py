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
POLICY = RoutingPolicy(band=(0.4, 0.6), audit_fraction=0.0)


def item_shas(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def route_next(head, X, zs, shas, pool, step: int, rng) -> np.ndarray:
    """The next ``step`` items of ``pool`` verge sends to review (bench/loop.py and the team
    alike): workers/routing.py's decision on the current head's score and the second judge's,
    routed first (near the threshold, judges disagreeing), most uncertain first within them;
    at random while there is no head yet."""
    if head is None:
        return rng.choice(pool, min(step, len(pool)), replace=False)
    p = head.predict(X[pool])[:, 1]
    decisions = [route(float(p[j]), float(zs[i]), shas[i], POLICY) for j, i in enumerate(pool)]
    order = sorted(range(len(pool)), key=lambda j: (not decisions[j].routed, -decisions[j].priority))
    return pool[order[:step]]


def coverage_seeds(X, n: int, rng, iters: int = 10) -> list[int]:
    """Cold start before any head exists: ``n`` items that cover the embedding space (k-means
    on the stored embeddings, the item nearest each centre), so that the first reviews and their
    neighbour panels reach every region. Uses the embeddings only, never a label."""
    centres = X[rng.choice(len(X), n, replace=False)].copy()
    for _ in range(iters):
        near = (X @ centres.T).argmax(1)  # unit vectors: the largest dot product is the nearest
        for c in range(n):
            members = X[near == c]
            if len(members):
                m = members.mean(0)
                centres[c] = m / (np.linalg.norm(m) or 1.0)
    picks: list[int] = []
    for c in range(n):
        order = np.argsort(-(X @ centres[c]))
        picks.append(int(next(i for i in order if int(i) not in picks)))
    return picks


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
    # (actions so far, what training would use then) after each action that changed it, since
    # the last retrain: the action that first reaches the target is found among these
    checkpoints: list = field(default_factory=list)

    def checkpoint(self) -> None:
        train = self.training()
        if not self.checkpoints or self.checkpoints[-1][1] != train:
            self.checkpoints.append((self.actions, train))

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
            self.checkpoint()
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
        self.checkpoint()

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


def first_reaching(checkpoints, evaluate, target, lo_acc=None):
    """The checkpoint (actions, accuracy, trained) at which the training set first reaches
    ``target``, by bisection over ``checkpoints`` (the last one is known to reach it; accuracy is
    taken as rising with labels within one round). ``evaluate(train) -> accuracy``."""
    lo, hi = 0, len(checkpoints) - 1  # checkpoints[hi] reaches the target, checkpoints[0] not
    accs = {}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        accs[mid] = evaluate(checkpoints[mid][1])
        if accs[mid] >= target:
            hi = mid
        else:
            lo = mid
    actions, train = checkpoints[hi]
    return actions, accs.get(hi), len(train)


def simulate_team(cfg: Config, X, y, zs, test_X, test_y, seed_n, step, budget_actions, seed,
                  target, accuracy, coverage: bool = True):
    """Rounds as bench/loop.py's: retrain on what training would use, route the next ``step``
    tasks, let the team work them. The count is the action after which the training set first
    reaches the target (not the end of that round): the round whose retrain first reaches it is
    searched action by action. Returns (curve of (actions, accuracy, trained), team)."""
    from store.neighbours import NeighbourIndex

    rng = np.random.default_rng(seed)
    team = Team(y, cfg, rng)
    n = len(y)
    index = NeighbourIndex("sim")
    index.load(np.arange(1, n + 1, dtype=np.int64), X.astype(np.float32))
    if cfg.gold:
        team.gold_items = set(int(i) for i in rng.choice(n, 50, replace=False))
    routed: set = set()
    shas = item_shas(n)

    def evaluate(train):
        idx = np.array(sorted(train), dtype=int)
        ytrain = y.copy()
        ytrain[idx] = [train[i] for i in idx]
        return accuracy(X, ytrain, idx, test_X, test_y)

    first = coverage_seeds(X, seed_n, rng) if coverage else \
        [int(i) for i in rng.choice(n, seed_n, replace=False)]
    first = [i for i in first if i not in team.gold_items]
    routed.update(first)
    team.checkpoint()
    for i in first:
        team.work_task(i, index, X, routed)
    curve = []
    while True:
        train = team.training()
        acc, head = evaluate(train)
        if acc >= target:
            actions, acc_at, trained = first_reaching(team.checkpoints, lambda t: evaluate(t)[0],
                                                      target)
            curve.append((actions, acc if acc_at is None else acc_at, trained))
            return curve, team
        curve.append((team.actions, acc, len(train)))
        if team.actions >= budget_actions:
            return curve, team
        team.checkpoints = team.checkpoints[-1:]  # below the target so far
        pool = np.array([i for i in range(n) if i not in routed and i not in train])
        if len(pool) == 0:
            return curve, team
        pick = route_next(head, X, zs, shas, pool, step, rng)
        routed.update(int(i) for i in pick)
        for i in pick:
            team.work_task(int(i), index, X, routed)
