"""The figures' captions, in English and Chinese (the figures' own text is English: the
bundled font has no Chinese glyphs)."""

from __future__ import annotations

from src.utils.messages import register, t

__all__ = ["t"]

register({
    "plots.profile_binary": {
        "en": "Item-response profile: for each item the probability of its second category "
              "({what}), one line per class.",
        "zh": "题目反应概况：每个题目取第二个类别（{what}）的概率，每个类别一条线。"},
    "plots.profile_stacked": {
        "en": "Item-response profile: one panel per class; each bar stacks an item's "
              "category probabilities in the item's category order.",
        "zh": "题目反应概况：每个潜在类别一个面板；每根柱子按题目的类别顺序堆叠各类别的概率。"},
    "plots.scatter": {
        "en": "Pairwise scatter plots of the data coloured by modal class, with each "
              "component's mean (x) and ellipse holding {level:.0%} of its mass{columns}; "
              "on the diagonal, each column's histogram with the weighted component densities.",
        "zh": "按众数类别着色的数据两两散点图，标出每个分量的均值（x）和包含其 {level:.0%} "
              "概率质量的椭圆{columns}；对角线为各列的直方图及加权分量密度。"},
    "plots.scatter_columns": {
        "en": " (the first {shown} of {total} columns)",
        "zh": "（{total} 列中的前 {shown} 列）"},
    "plots.density": {
        "en": "Histogram of {column} (all {n} rows) with the mixture density (black) and "
              "each weighted component (coloured).",
        "zh": "{column} 的直方图（全部 {n} 行），以及混合密度（黑色）和各加权分量（彩色）。"},
    "plots.regression_line": {
        "en": "{target} against {predictor}, coloured by modal class, with each class's "
              "regression line.",
        "zh": "{target} 对 {predictor} 的散点图，按众数类别着色，并画出每个类别的回归线。"},
    "plots.regression_fitted": {
        "en": "Observed {target} against its fitted value under the row's modal class, "
              "coloured by that class; the diagonal is observed = fitted.",
        "zh": "观测的 {target} 对其在所属众数类别下的拟合值，按该类别着色；对角线为观测值 = 拟合值。"},
    "plots.regression_density": {
        "en": "Histogram of {target} (all {n} rows) with the mixture density (black) and "
              "each class's weighted normal density (coloured).",
        "zh": "{target} 的直方图（全部 {n} 行），以及混合密度（黑色）和各类别的加权正态密度（彩色）。"},
    "plots.posterior": {
        "en": "Largest posterior class probability of each of the {n} rows, stacked by modal "
              "class (mean {mean:.3f}); the dashed line marks 0.7.",
        "zh": "{n} 行中每行最大的后验类别概率，按众数类别堆叠（平均 {mean:.3f}）；虚线标出 0.7。"},
    "plots.subsample": {
        "en": " Points: a fixed random {shown} of the {total} rows.",
        "zh": " 散点：{total} 行中固定随机抽取的 {shown} 行。"},
})
