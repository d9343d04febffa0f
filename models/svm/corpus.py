"""Deterministic synthetic corpus of knowledge-base questions (text,label CSV).

Rows look like the tutorial's data, e.g. `@kg.MutualFund 基金@初始规模 是怎样`,
labelled with the (entity type, attribute) asked about, e.g. `MutualFund.初始规模`.
Realism, so that accuracy is not trivially 100%:
  * attributes are shared between entity types (成立日期, 市盈率, 董事长 ...), so
    the `@kg.Type` marker or the type word matters -- and is sometimes missing;
  * attributes are often named by a short or colloquial form that several
    attributes share (规模 for 初始规模/最新规模/发行规模/管理规模 ...);
  * many phrasings, fillers and question words; mildly skewed class frequencies.

    python -m models.svm.corpus --rows 60000 --classes 124 --out corpus.csv
    python -m models.svm.corpus --rows 500 --classes 8 --out models/svm/data/sample.csv \
        --dev_out models/svm/data/sample_dev.csv --dev_fraction 0.2
"""
import argparse
import csv
import logging
import os
import random
import sys

logger = logging.getLogger(__name__)

# (kg type, words a user calls it, 16 attributes). Order is part of the format:
# class k is attribute k // 8 of type k % 8, so any --classes N mixes all types.
ENTITY_TYPES = [
    ("MutualFund", ["基金", "这只基金", "该基金"],
     ["初始规模", "最新规模", "成立日期", "基金经理", "管理费率", "托管费率", "申购费率", "赎回费率",
      "单位净值", "累计净值", "基金类型", "风险等级", "投资范围", "业绩基准", "分红方式", "托管银行"]),
    ("Stock", ["股票", "这只股票", "该股"],
     ["股价", "市盈率", "市净率", "总市值", "流通市值", "上市日期", "所属行业", "每股收益",
      "股息率", "成交量", "换手率", "涨跌幅", "董事长", "注册资本", "主营业务", "总股本"]),
    ("Bond", ["债券", "这只债券", "该债"],
     ["票面利率", "到期日期", "发行规模", "信用评级", "付息方式", "发行人", "剩余期限", "到期收益率",
      "久期", "发行价格", "担保人", "起息日期", "债券类型", "上市场所", "面值", "计息方式"]),
    ("Company", ["公司", "这家公司", "该企业"],
     ["成立日期", "注册资本", "法人代表", "注册地址", "经营范围", "员工人数", "营业收入", "净利润",
      "董事长", "总经理", "主营业务", "所属行业", "官方网站", "联系电话", "控股股东", "子公司"]),
    ("Insurance", ["保险", "这款保险", "该险种"],
     ["保费", "保额", "保障期限", "等待期", "免赔额", "投保年龄", "理赔流程", "犹豫期",
      "缴费方式", "保险公司", "现金价值", "责任免除", "续保条件", "产品类型", "受益人", "退保费用"]),
    ("Bank", ["银行", "这家银行", "该行"],
     ["存款利率", "贷款利率", "客服电话", "营业时间", "网点地址", "信用卡额度", "转账手续费", "理财产品",
      "行长", "总资产", "不良贷款率", "成立日期", "注册资本", "所属集团", "跨行取款费", "开户条件"]),
    ("Index", ["指数", "这个指数", "该指数"],
     ["点位", "成分股", "基日", "基点", "编制方法", "市盈率", "涨跌幅", "成交额",
      "发布机构", "调样周期", "样本数量", "加权方式", "历史最高", "历史最低", "股息率", "跟踪基金"]),
    ("FundManager", ["基金经理", "这位经理", "这个经理"],
     ["从业年限", "管理规模", "任职回报", "毕业院校", "学历", "在管基金", "所属公司", "投资风格",
      "年龄", "性别", "代表产品", "历任基金", "最佳回报", "任职日期", "获奖情况", "个人简介"]),
]
MAX_CLASSES = sum(len(attrs) for _, _, attrs in ENTITY_TYPES)

# Colloquial names; several are deliberately shared (the corpus's hard cases).
SYNONYMS = {
    "初始规模": ["规模", "成立规模", "首发规模"], "最新规模": ["规模", "现在规模", "资产规模"],
    "发行规模": ["规模", "发行量"], "管理规模": ["规模", "管理资产"],
    "单位净值": ["净值"], "累计净值": ["净值", "累积净值"], "管理费率": ["管理费", "费率"],
    "托管费率": ["托管费", "费率"], "申购费率": ["申购费", "买入费用"], "赎回费率": ["赎回费", "卖出费用"],
    "股价": ["价格", "现价"], "发行价格": ["价格", "发行价"], "票面利率": ["利率", "票息"],
    "存款利率": ["利率", "存款利息"], "贷款利率": ["利率", "贷款利息"], "成立日期": ["成立时间", "哪年成立"],
    "上市日期": ["上市时间", "什么时候上市"], "任职日期": ["任职时间", "什么时候上任"],
    "到期日期": ["到期时间", "什么时候到期"], "起息日期": ["起息时间"], "董事长": ["老板", "一把手"],
    "总经理": ["老板", "CEO"], "行长": ["一把手", "负责人"], "法人代表": ["法人", "负责人"],
    "总市值": ["市值"], "流通市值": ["市值", "流通值"], "涨跌幅": ["涨幅", "涨了多少"],
    "历史最高": ["最高点"], "历史最低": ["最低点"], "注册资本": ["注册资金"], "员工人数": ["多少员工"],
    "客服电话": ["电话"], "联系电话": ["电话"], "营业收入": ["营收", "收入"], "净利润": ["利润", "赚了多少"],
    "保费": ["价格", "多少钱"], "保额": ["赔多少"], "主营业务": ["主业", "做什么的"],
    "个人简介": ["简介", "背景"], "信用评级": ["评级"], "风险等级": ["风险"], "股息率": ["分红率"],
}
PREFIXES = ["", "", "", "请问", "我想知道", "帮我查一下", "查询", "能告诉我", "问一下", "麻烦看看"]
FILLERS = ["", "", "", "", "现在", "目前", "最近", "大概", "具体"]
QUESTION_WORDS = ["是怎样", "是多少", "是什么", "怎么样", "多少", "如何", "是啥", "呢", "吗", "?", "？", ""]


def class_names(num_classes):
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError("--classes must be in 1..%d" % MAX_CLASSES)
    names = []
    for k in range(num_classes):
        kg_type, _, attrs = ENTITY_TYPES[k % len(ENTITY_TYPES)]
        names.append((kg_type, k % len(ENTITY_TYPES), attrs[k // len(ENTITY_TYPES)]))
    return names


def make_question(rng, kg_type, type_index, attr):
    words = ENTITY_TYPES[type_index][1]
    roll = rng.random()
    if roll < 0.55:  # linked entity, as the tutorial's rows
        entity = "@kg.%s %s" % (kg_type, rng.choice(words))
    elif roll < 0.8:
        entity = "@kg.%s" % kg_type
    elif roll < 0.93:  # entity not linked: only the type word is left
        entity = rng.choice(words)
    else:  # nothing tells the type: ambiguous for shared attributes
        entity = ""
    surface = attr if rng.random() < 0.6 else rng.choice(SYNONYMS.get(attr, [attr]))
    style = rng.random()
    if not entity:
        body = "%s%s" % (rng.choice(FILLERS), surface)
    elif style < 0.5:
        body = "%s@%s" % (entity, surface)
    elif style < 0.8:
        body = "%s的%s%s" % (entity, rng.choice(FILLERS), surface)
    else:
        body = "%s %s%s" % (entity, rng.choice(FILLERS), surface)
    text = " ".join(p for p in (rng.choice(PREFIXES), body.strip(), rng.choice(QUESTION_WORDS)) if p)
    return text


def generate(rows, classes, seed=20190101):
    """Return a list of (text, label) rows; same arguments -> same rows."""
    rng = random.Random(seed)
    names = class_names(classes)
    # Mildly skewed class frequencies (about 3:1 between most and least common).
    weights = [1.0 / (1.0 + 2.0 * k / max(1, classes - 1)) for k in range(classes)]
    picks = rng.choices(range(classes), weights=weights, k=rows)
    # Every class appears at least once when rows allow it.
    picks[:min(rows, classes)] = list(range(min(rows, classes)))
    rng.shuffle(picks)
    out = []
    for k in picks:
        kg_type, type_index, attr = names[k]
        out.append((make_question(rng, kg_type, type_index, attr), "%s.%s" % (kg_type, attr)))
    return out


def split(rows, dev_fraction, seed=20190101):
    """Deterministic shuffle split -> (train_rows, dev_rows)."""
    order = list(range(len(rows)))
    random.Random(seed + 1).shuffle(order)
    n_dev = int(round(len(rows) * dev_fraction))
    dev = set(order[:n_dev])
    return ([r for i, r in enumerate(rows) if i not in dev],
            [r for i, r in enumerate(rows) if i in dev])


def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60000, help="number of questions")
    parser.add_argument("--classes", type=int, default=124, help="number of classes (max %d)" % MAX_CLASSES)
    parser.add_argument("--seed", type=int, default=20190101)
    parser.add_argument("--out", required=True, help="CSV to write (train split if --dev_out)")
    parser.add_argument("--dev_out", help="also write a dev split here")
    parser.add_argument("--dev_fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    if not 1 <= args.classes <= MAX_CLASSES:
        parser.error("--classes must be in 1..%d, got %d" % (MAX_CLASSES, args.classes))
    rows = generate(args.rows, args.classes, args.seed)
    if args.dev_out:
        train_rows, dev_rows = split(rows, args.dev_fraction, args.seed)
        write_csv(train_rows, args.out)
        write_csv(dev_rows, args.dev_out)
        print("wrote %d rows to %s and %d rows to %s (%d classes)"
              % (len(train_rows), args.out, len(dev_rows), args.dev_out, args.classes))
    else:
        write_csv(rows, args.out)
        print("wrote %d rows to %s (%d classes)" % (len(rows), args.out, args.classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
