"""Realistic multilingual workload texts, sized in real XLM-R tokens, deterministic per seed."""

from __future__ import annotations

import random
from typing import Any

SENTENCES = [
    "Dense retrieval maps queries and documents into one vector space where nearness means relevance.",
    "The committee will publish its final report on regional water management early next spring.",
    "Lexical matching still matters when a query names a rare product code or a person's surname.",
    "Modern search systems combine several signals and rerank the best candidates with a slower model.",
    "La ville a annoncé un nouveau plan de transport public pour réduire les embouteillages du centre.",
    "Les chercheurs ont comparé plusieurs méthodes d'indexation sur des corpus multilingues variés.",
    "Die Bibliothek bietet ab nächster Woche längere Öffnungszeiten und einen neuen Lesesaal an.",
    "Für die Suche in großen Dokumentsammlungen werden häufig hybride Verfahren eingesetzt.",
    "El informe describe cómo las pequeñas empresas adoptan herramientas digitales en zonas rurales.",
    "Los modelos de lenguaje multilingües permiten buscar documentos escritos en otros idiomas.",
    "Сервис обрабатывает миллионы запросов в день и возвращает результаты за доли секунды.",
    "Исследователи сравнили плотные и разреженные представления текстов на нескольких языках.",
    "检索增强生成系统先从知识库中找到相关段落，再把它们交给语言模型生成答案。",
    "这个城市的公共交通系统在过去十年里得到了很大的改善，地铁线路增加了一倍。",
    "東京の研究チームは、多言語の文書検索で新しい評価基準を発表しました。",
    "このモデルは短い質問にも長い文書にも同じように使うことができます。",
    "يعتمد محرك البحث على تمثيلات كثيفة ومتفرقة للنصوص لتحسين دقة النتائج.",
    "أعلنت الجامعة عن برنامج جديد لدراسة معالجة اللغات الطبيعية في العام المقبل.",
    "इस प्रणाली का उपयोग करके उपयोगकर्ता कई भाषाओं में दस्तावेज़ खोज सकते हैं।",
    "Model ini dapat digunakan untuk pencarian dokumen dalam banyak bahasa sekaligus.",
    "Het onderzoek laat zien dat hybride zoekmethoden beter presteren dan elk afzonderlijk.",
    "O relatório mostra que a procura por energia renovável cresceu rapidamente este ano.",
]


def make_texts(tokenizer: Any, count: int, target_tokens: int, seed: int = 0) -> list[str]:
    """`count` texts of about `target_tokens` tokens each (special tokens included), mixed languages."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts: list[str] = []
        length = 2
        while length < target_tokens:
            sentence = rng.choice(SENTENCES)
            parts.append(sentence)
            length += len(tokenizer(sentence, add_special_tokens=False)["input_ids"])
        text = " ".join(parts)
        ids = tokenizer(text, truncation=True, max_length=target_tokens)["input_ids"]
        texts.append(tokenizer.decode(ids[1:-1]))
    return texts
