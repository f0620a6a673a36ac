"""Which words make a text medical, for the offline reference judge (:mod:`.reference`); pure, no I/O.

The reference judge may call an answer "reasonable but outside medicine" (tier C, 0.0) only when nothing in it
could be a medical word, so this module errs towards "medical": Chinese medical characters and words (organs,
diseases, drug-name endings such as 沙星, 洛尔, 替尼), English medical words and stems, and *every* Latin word that
is not plain everyday English. An abbreviation (COPD, ARDS, DKA, PCI), a drug (metformin) or a Latin term is
therefore never "outside medicine"; a correct answer written with one is never scored 0.0.

>>> looks_medical("考虑COPD急性加重"), looks_medical("DKA"), looks_medical("给予强力霉素")
(True, True, True)
>>> looks_medical("周末去公园散步，天气很好。"), looks_medical("The weather is nice today and I want to go hiking.")
(False, False)
"""

from __future__ import annotations

import re
import unicodedata

MEDICAL_ZH = (
    # single characters that (almost) only occur in medical words
    "病 症 药 炎 癌 瘤 疗 诊 医 患 疾 菌 毒 疫 脏 腺 肿 疡 脓 痰 咳 喘 痛 疼 血 脉 肝 肾 肺 胃 肠 骨 髓 栓 孕 胎 疹 疮 脾 "
    "疝 瘘 癣 疣 痔 痫 瘫 疱 疸 痨 痹 疖 痈 瘀 瘢 痂 痒 痿 癫 胰 胆 膀 宫 膜 肌 腱 脊 椎 颅 痉 挛 酶 苷 胺 酮 唑 嗪 嘧 "
    # words
    "手术 检查 剂量 口服 静脉 注射 服用 处方 过敏 发热 发烧 头晕 恶心 呕吐 腹泻 便秘 心脏 心率 心电 呼吸 体温 免疫 "
    "激素 维生素 营养 康复 护理 复查 就诊 就医 休息 饮食 锻炼 睡眠 体重 妊娠 分娩 大脑 脑部 神经 中医 针灸 方剂 草药 "
    "穴位 经络 气血 阴虚 阳虚 舌苔 补液 输液 抗体 指标 影像 征 综合征 感染 溃疡 结石 梗死 梗阻 衰竭 休克 昏迷 抽搐 麻痹 "
    "中毒 骨折 出血 贫血 水肿 积液 狭窄 关闭不全 房颤 血压 血糖 尿 粪便 卵巢 精子 乳腺 甲状 垂体 前列 皮肤 黏膜 关节 "
    "韧带 霉素 西林 沙星 洛尔 地平 普利 沙坦 替尼 单抗 他汀 头孢 硝酸 胰岛 球蛋白 蛋白 细胞 抗原 阳性 阴性 试验 活检 "
    "穿刺 切除 置换 移植 介入 造影 超声 内镜 透析 化疗 放疗 靶向 插管 通气 吸氧 复苏 除颤 起搏 支架 引流 缝合 清创 疫苗 "
    "抗凝 溶栓 抗生素 抗感染 镇痛 镇静 麻醉 利尿 降压 降糖 降脂 监测 随访 筛查 评估 病理 白细胞 红细胞 血小板 "
    "综合 治疗 用药 给药 禁忌 适应证 并发 预后 复发 转移 良性 恶性 先天 遗传 早产 新生儿 婴儿 儿童 老年 孕妇 产妇 "
    "抑郁 焦虑 精神 谵妄 痴呆 失眠 幻觉 妄想 心理 认知"
).split()
# English medical words and stems; any other Latin word that is not everyday English counts as medical too.
MEDICAL_EN = re.compile(
    r"\b(?:mg|ml|mmol|dose\w*|patient\w*|disease\w*|diagnos\w*|treat\w*|therap\w*|symptom\w*|infect\w*|clinic\w*"
    r"|ct|mri|ecg|ekg|iv|im|po|blood|heart|lung\w*|liver|kidney\w*|brain|pain\w*|fever\w*|cough\w*|drug\w*"
    r"|medic\w*|doctor\w*|hospital\w*|nurs\w*|surg\w*|syndrome\w*|cancer\w*|tumou?r\w*|vaccin\w*|virus\w*"
    r"|bacteri\w*|antibiot\w*|insulin\w*|stroke\w*|diabet\w*|pregnan\w*|inject\w*|tablet\w*|pill\w*|steroid\w*"
    r"|\w+(?:itis|emia|aemia|oma|omas|osis|oses|ectomy|otomy|ostomy|pathy|plasty|algia|uria|penia|trophy"
    r"|plegia|scopy|graphy|cardia|lysis|genic|mycin|cillin|floxacin|olol|pril|sartan|statin|azole|mab|nib"
    r"|vir|dipine|tidine|prazole))\b",
    re.IGNORECASE,
)
MEDICAL = re.compile("|".join(MEDICAL_ZH) + "|" + MEDICAL_EN.pattern, re.IGNORECASE)

# Plain everyday English: text made only of these words (and Chinese) may be "outside medicine".
EVERYDAY_EN = frozenset(
    """a about above after again all almost also always am an and another any are around as at away back be
    beautiful because been before being best better big book books both bought but buy by came can car cat city
    coffee come comes could country day days did do does dog don done down each eat eating enjoy enough even
    evening every family far favorite favourite few film find fine first food for friend friends from fun game
    games garden get gets getting give go goes going good got great had happy has have having he her here him his
    hiking holiday home hope hot house how i if in into is it its just keep kind know last late learn learning
    let life like likes little live long look lot love made make many market may me meet minutes money more
    morning most movie movies much music my near need never new next nice night no not nothing now of off often
    old on once one only or other our out over park people person picture pictures place play playing please
    read reading really rain right room said same saw say school see she should show since sing so some
    something sometimes song soon sports spring start still stories story street such summer sun sunny sure take
    talk tea than thank thanks that the their them then there these they thing things think this those time
    to today together tomorrow too took town travel tree trees trip try two up us use used very visit walk
    walking want was watch water way we weather week weekend well went were what when where which while who why
    will window winter with without work world would write year years yes yesterday yet you your""".split()
)
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def looks_medical(text: str) -> bool:
    """Whether ``text`` has a medical word, or a Latin word that is not everyday English (an abbreviation, a drug,
    a term): then it is never "outside medicine"."""
    text = unicodedata.normalize("NFKC", text)
    return bool(MEDICAL.search(text)) or bool(unfamiliar_latin_words(text))


def unfamiliar_latin_words(text: str) -> list[str]:
    """The Latin words of ``text`` that are not everyday English (abbreviations, drugs, terms, garbage).

    >>> unfamiliar_latin_words("患者为ARDS, I think it is fine")
    ['ARDS']
    """
    return [w for w in _LATIN_WORD.findall(text) if w.lower() not in EVERYDAY_EN]
