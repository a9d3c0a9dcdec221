"""scikit-learn's trees send a missing value (NaN) down a side chosen at fit (``missing_go_to_left``);
skl2onnx writes every tree node as sending it to the false branch. Rewriting the ONNX tree ensemble's
``nodes_missing_value_tracks_true`` from the fitted trees makes the ONNX form answer rows with missing
values as the native model does (the compilation's check then confirms it, or keeps it off them).
"""

from __future__ import annotations

from typing import Any

ENSEMBLES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


def fitted_trees(estimator: Any) -> list[Any] | None:
    """The fitted ``tree_`` of each tree, in skl2onnx's tree-id order: a decision tree's one, a
    forest's (random or extra trees) one per estimator; None for anything else."""
    if hasattr(estimator, "tree_"):
        return [estimator.tree_]
    members = getattr(estimator, "estimators_", None)
    if isinstance(members, list) and members and all(hasattr(m, "tree_") for m in members):
        return [m.tree_ for m in members]
    return None


def track_missing_values(model: Any, estimator: Any) -> None:
    """Set each branch's missing-value side in the graph's one tree ensemble from ``estimator``'s
    trees, in place; nothing changes where the graph or the estimator is not that simple."""
    from onnx import helper

    trees = fitted_trees(estimator)
    nodes = [n for n in model.graph.node if n.op_type in ENSEMBLES]
    if trees is None or len(nodes) != 1 or not all(hasattr(t, "missing_go_to_left") for t in trees):
        return
    (node,) = nodes
    attributes = {a.name: a for a in node.attribute}
    tree_ids = list(attributes["nodes_treeids"].ints)
    node_ids = list(attributes["nodes_nodeids"].ints)
    if max(tree_ids, default=-1) >= len(trees):
        return
    tracks = []
    for tree_id, node_id in zip(tree_ids, node_ids, strict=True):
        tree = trees[tree_id]
        branch = node_id < tree.node_count and tree.children_left[node_id] != -1
        tracks.append(int(tree.missing_go_to_left[node_id]) if branch else 0)
    kept = [a for a in node.attribute if a.name != "nodes_missing_value_tracks_true"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("nodes_missing_value_tracks_true", tracks)])
