"""`knowledge map`'s scoring steps on tiny hand-made knowledge bases (no model: the dense part is
constant, so what ranks is the lexical score, the exact-hit bonus and the priors)."""
import pytest
import torch

from raddiag.knowledge import terms
from raddiag.knowledge.kb import Concept, KnowledgeBase
from raddiag.knowledge.map import PRIOR_PENALTY, CodeIndex, code_behaviour, suggest_codes


class ConstantEncoder:
    """Every text embeds to the same unit vector: cosine 1 everywhere, so dense never decides."""
    identity = "test-constant-encoder"

    def encode(self, texts, batch_size=32, progress=False):
        return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=1)


def _kb(*concepts: Concept) -> KnowledgeBase:
    kb = KnowledgeBase()
    for c in concepts:          # parents first, so children are linked
        kb.add(c)
    return kb


def _ranked(index: CodeIndex, scores: torch.Tensor) -> list[str]:
    return [index.codes[i] for i in scores.argsort(descending=True).tolist()]


@pytest.fixture
def kidney_kb():
    return _kb(Concept("N20", "Calculus of kidney and ureter", chapter="14"),
               Concept("N28", "Other disorders of kidney and ureter, not elsewhere classified", chapter="14"),
               Concept("L50", "Urticaria", chapter="12"))


def test_equivalent_words_map_kidney_stone_and_renal_calculus_alike(kidney_kb, monkeypatch):
    ix = CodeIndex(kidney_kb, ConstantEncoder(), use_cache=False)
    for name in ("kidney stone", "renal calculus", "Renal stones"):
        lex = ix.lexical(name)
        assert _ranked(ix, lex)[0] == "N20", name
        assert lex[ix.codes.index("N20")] == pytest.approx(1.0)        # every word met
    # without the equivalents table "stone" meets nothing and N20 no longer leads N28
    monkeypatch.setattr(terms, "_CANON", {})
    ix = CodeIndex(kidney_kb, ConstantEncoder(), use_cache=False)
    lex = ix.lexical("kidney stone")
    assert lex[ix.codes.index("N20")] == lex[ix.codes.index("N28")]


def test_compound_word_meets_its_plain_words(kidney_kb):
    assert terms.parts("urolithiasis") == ["urinary", "calculus"]
    assert terms.parts("nephrolithiasis") == ["kidney", "calculus"]
    assert terms.parts("retinoblastoma") == ["retina"]
    assert terms.parts("calculus") == [] and terms.parts("renal") == []
    ix = CodeIndex(kidney_kb, ConstantEncoder(), use_cache=False)
    assert _ranked(ix, ix.lexical("Nephrolithiasis"))[0] == "N20"


def test_exact_inclusion_term_of_a_sub_code_ranks_its_category_first():
    kb = _kb(Concept("I61", "Nontraumatic intracerebral hemorrhage", children=["I61.9"], chapter="9"),
             Concept("I61.9", "Nontraumatic intracerebral hemorrhage, unspecified", parent="I61",
                     synonyms=["Cerebral haemorrhage, deep"], chapter="9"),
             Concept("I62", "Other and unspecified nontraumatic intracranial hemorrhage", chapter="9"),
             Concept("I63", "Cerebral infarction", chapter="9"))
    ix = CodeIndex(kb, ConstantEncoder(), use_cache=False)
    lex = ix.lexical("deep cerebral hemorrhage")
    assert _ranked(ix, lex)[0] == "I61" and lex[ix.codes.index("I61")] == pytest.approx(1.0)
    # the same words in another order and spelling are an exact hit of I61 alone
    assert ix.exact_hits("Haemorrhage, deep cerebral").tolist() == [1.0, 0.0, 0.0]
    # "intracerebral" (13 letters) must share more than 6 letters: it does not meet "intracranial"
    assert ix.lexical("intracerebral")[ix.codes.index("I62")] == 0.0


def test_long_words_need_more_than_the_short_stem():
    assert terms.stem("spondylolisthesis") not in terms.prefixes("spondylosis")
    assert terms.stem("meningioma") in terms.prefixes("meninges")
    assert terms.stem("hernia") in terms.prefixes("herniation")
    assert terms.stem("disc") in terms.prefixes("disc")


def test_icd_wording_and_neoplasm_phrase():
    assert terms.icd_wording("Kidney stones") == "kidney calculus"
    assert terms.icd_wording("Unruptured aneurysm") == "nonruptured aneurysm"
    assert terms.icd_wording("Urolithiasis, splenomegaly") == "urinary calculus, spleen enlargement"
    assert terms.icd_wording("Pneumonia") == "pneumonia"                 # a root without an ending: kept
    assert terms.neoplasm_phrase("Hepatocellular carcinoma") == "malignant neoplasm of liver"
    assert terms.neoplasm_phrase("Liver metastases") == "secondary malignant neoplasm of liver"
    # a cell type names no site; a part of a limb or organ names the limb or organ ICD-10-CM files by
    assert terms.neoplasm_phrase("Squamous cell carcinoma of the oesophagus") == "malignant neoplasm of esophagus"
    assert terms.neoplasm_phrase("Small cell carcinoma") == ""
    assert terms.neoplasm_phrase("Chondrosarcoma of the tibia") == "malignant neoplasm of cartilage lower limb"
    assert terms.neoplasm_phrase("Myxoma of the left ventricle") == "benign neoplasm of left heart"
    # carcinomatosis of a site is spread to it (the Alphabetic Index: secondary), not a primary there
    assert terms.neoplasm_phrase("Pleural carcinomatosis") == "secondary malignant neoplasm of pleural"
    assert terms.neoplasm_phrase("Adrenal adenoma") == "benign neoplasm of adrenal gland"
    assert terms.neoplasm_phrase("Osteoblastoma") == "benign neoplasm of bone"
    assert terms.neoplasm_phrase("Glioblastoma") == ""                   # no site in the name
    assert terms.neoplasm_phrase("Pleural effusion") == ""               # no tumour word
    # site words must be ICD-10-CM's when its vocabulary is given: an eponym names no site
    assert terms.neoplasm_phrase("Ewing sarcoma", vocabulary={"bone", "liver"}) == ""
    assert terms.neoplasm_phrase("Liver sarcoma", vocabulary={"bone", "liver"}) == "malignant neoplasm of liver"
    # a tumour ICD-10-CM names categories by (D18 "Hemangioma ... any site") keeps its own word
    assert terms.neoplasm_phrase("Hepatic haemangioma", frozenset({"hemangioma"})) == ""
    # ... but "carcinoma" goes by site even though "Merkel cell carcinoma" names a category
    assert terms.neoplasm_phrase("Gastric carcinoma", frozenset({"carcinoma"})) == \
        "malignant neoplasm of stomach"


@pytest.mark.parametrize("code,kind", [("C34", "malignant"), ("C78", "secondary malignant"),
                                       ("C7B", "secondary malignant"), ("D05", "in situ"), ("D35", "benign"),
                                       ("D3A", "benign"), ("D44", "uncertain"), ("D50", ""), ("J18", "")])
def test_code_behaviour(code, kind):
    assert code_behaviour(code) == kind


def test_priors_keep_history_codes_and_wrong_behaviour_below(tmp_path, monkeypatch):
    monkeypatch.setenv("RADDIAG_CACHE", str(tmp_path))
    # Z85 first: on a tie of everything else the first category would win
    kb = _kb(Concept("Z85", "Personal history of malignant neoplasm", children=["Z85.1"], chapter="21"),
             Concept("Z85.1", "Personal history of malignant neoplasm of bronchus and lung", parent="Z85",
                     chapter="21"),
             Concept("C34", "Malignant neoplasm of bronchus and lung", chapter="2"),
             Concept("C74", "Malignant neoplasm of adrenal gland", chapter="2"),
             Concept("D35", "Benign neoplasm of other and unspecified endocrine glands", children=["D35.0"],
                     chapter="2"),
             Concept("D35.0", "Benign neoplasm of adrenal gland", parent="D35", chapter="2"))
    enc = ConstantEncoder()

    def scores(name):
        return {c: s for c, _, s in suggest_codes([name], top=4, encoder=enc, kb=kb)[0]}

    def top(name):
        return max((s, c) for c, s in scores(name).items())[1]

    ix = CodeIndex(kb, enc, use_cache=False)
    # the words of "lung cancer" are all in C34 and in Z85's subtree alike: the prior decides
    assert ix.lexical("lung cancer")[ix.codes.index("C34")] == ix.lexical("lung cancer")[ix.codes.index("Z85")]
    got = scores("lung cancer")
    assert PRIOR_PENALTY > 0 and got["C34"] - got["Z85"] == pytest.approx(PRIOR_PENALTY, abs=1e-3)
    assert top("personal history of lung cancer") == "Z85"          # asked for: no penalty
    assert ix.codes == ["Z85", "C34", "C74", "D35"]
    assert ix.unlikely_for("Adrenal adenoma").tolist() == [1.0, 1.0, 1.0, 0.0]   # Z85; C34, C74 malignant
    assert top("Adrenal adenoma") == "D35"
    assert ix.unlikely_for("Adrenal carcinoma").tolist() == [1.0, 0.0, 0.0, 1.0]
    assert top("Adrenal carcinoma") == "C74"


class WordEncoder:
    """Bag of three words: the cosine of two texts is their overlap in these words (no model)."""
    identity = "test-word-encoder"
    WORDS = ("volvulus", "sigmoid", "onchocerca")

    def encode(self, texts, batch_size=32, progress=False):
        rows = [[float(w in t.lower().split()) for w in self.WORDS] for t in texts]
        return torch.nn.functional.normalize(torch.tensor(rows) + 1e-6, dim=1)


def test_dense_reads_a_direct_subdivisions_texts_a_little_lower():
    """ICD-10-CM keeps most inclusion terms under a category's subdivisions ("Volvulus" is K56.2,
    not K56's own text): dense meets them, CHILD_DISCOUNT below an own text of the same cosine."""
    from raddiag.knowledge.map import CHILD_DISCOUNT

    kb = _kb(Concept("K56", "Paralytic ileus and intestinal obstruction without hernia", children=["K56.2"],
                     chapter="11"),
             Concept("K56.2", "Volvulus", parent="K56", chapter="11"),
             Concept("B73", "Onchocerciasis", synonyms=["Onchocerca volvulus infection"], chapter="1"),
             Concept("X99", "Sigmoid volvulus", chapter="11"))
    ix = CodeIndex(kb, WordEncoder(), use_cache=False)
    assert ix.is_child == [False, True, False, False, False]   # K56; K56.2's text; B73 x 2; X99
    d = ix.dense(["volvulus"])[0]
    assert d[ix.codes.index("K56")] == pytest.approx(1.0 - CHILD_DISCOUNT, abs=1e-4)
    assert d[ix.codes.index("B73")] == pytest.approx(2 ** -0.5, abs=1e-4)   # one word of two
    assert _ranked(ix, d)[0] == "K56"
    # an own text of the same cosine is not discounted
    assert ix.dense(["sigmoid volvulus"])[0][ix.codes.index("X99")] == pytest.approx(1.0, abs=1e-4)


def test_injury_codes_are_unlikely_unless_the_name_says_injury():
    """A popliteal aneurysm is I72, not S85 "Injury of blood vessels at lower leg level"; a fracture
    asks for the injury chapter."""
    kb = _kb(Concept("S85", "Injury of blood vessels at lower leg level", chapter="19"),
             Concept("I72", "Other aneurysm", chapter="9"))
    ix = CodeIndex(kb, ConstantEncoder(), use_cache=False)
    assert ix.unlikely_for("Popliteal artery aneurysm").tolist() == [1.0, 0.0]
    for name in ("Tibial fracture", "Traumatic popliteal artery tear", "Fractured tibia", "Foreign body"):
        assert ix.unlikely_for(name).tolist() == [0.0, 0.0], name


def test_parenthesised_modifiers_are_not_needed_for_an_exact_hit():
    """ICD-10-CM writes nonessential modifiers in parentheses: "Calculus of kidney (impacted)
    (recurrent)" is an exact hit of "kidney calculus"; the words inside count too."""
    kb = _kb(Concept("N13", "Obstructive and reflux uropathy", synonyms=["Calculus of kidney with hydronephrosis"],
                     chapter="14"),
             Concept("N20", "Calculus of kidney and ureter", children=["N20.0"], chapter="14"),
             Concept("N20.0", "Calculus of kidney (impacted) (recurrent)", parent="N20", chapter="14"))
    ix = CodeIndex(kb, ConstantEncoder(), use_cache=False)
    assert ix.exact_hits("Kidney calculus").tolist() == [0.0, 1.0]
    assert ix.exact_hits("recurrent impacted calculus of kidney").tolist() == [0.0, 1.0]
    assert ix.exact_hits("Calculus of kidney with hydronephrosis").tolist() == [1.0, 0.0]
    # ICD-9-CM names (the GEM source) bracket another wording: either reading is a hit
    kb = _kb(Concept("A40", "Streptococcal sepsis", synonyms=["Pneumococcal septicemia [Streptococcus pneumoniae "
                                                              "septicemia]"], chapter="1"))
    ix = CodeIndex(kb, ConstantEncoder(), use_cache=False)
    assert ix.exact_hits("Pneumococcal septicaemia").tolist() == [1.0]


def test_held_out_test_names_appear_nowhere_in_the_code_or_docs():
    """The benchmark's "test" names (benchmarks/data/radiology_icd_heldout.tsv) must stay unseen:
    no source file, test or README may name one (a word table written for one would be tuning)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = [line.split("\t") for line in (root / "benchmarks" / "data" / "radiology_icd_heldout.tsv")
            .read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    names = [r[0].lower() for r in rows if r[2] == "test"]
    assert len(names) >= 200
    files = [*root.joinpath("src").rglob("*.py"), *root.joinpath("tests").rglob("*.py"), root / "README.md"]
    text = "\n".join(f.read_text(encoding="utf-8").lower() for f in files)
    found = [n for n in names if re.search(r"\b" + re.escape(n) + r"\b", text)]
    assert not found, f"held-out test names in the code or docs: {found}"


def test_a_tumour_is_filed_by_its_site_not_its_cell_type():
    """C44 "... of skin" lists squamous cell carcinomas; one of a bronchus or lung is C34.
    A tumour of the femur is C40 "... of limbs", not C41 "... of other and unspecified sites"."""
    kb = _kb(Concept("C44", "Other and unspecified malignant neoplasm of skin",
                     synonyms=["Squamous cell carcinoma of skin"], chapter="2"),
             Concept("C34", "Malignant neoplasm of bronchus and lung", chapter="2"),
             Concept("C40", "Malignant neoplasm of bone and articular cartilage of limbs", children=["C40.2"],
                     chapter="2"),
             Concept("C40.2", "Malignant neoplasm of long bones of lower limb", parent="C40", chapter="2"),
             Concept("C41", "Malignant neoplasm of bone and articular cartilage of other and unspecified sites",
                     chapter="2"))
    ix = CodeIndex(kb, ConstantEncoder(), use_cache=False)
    assert _ranked(ix, ix.lexical("Squamous cell carcinoma of lung"))[0] == "C34"
    assert _ranked(ix, ix.lexical("Squamous cell carcinoma"))[0] == "C44"        # no site: the cell type decides
    assert _ranked(ix, ix.lexical("Osteosarcoma of femur"))[0] == "C40"


def test_a_name_without_latin_letters_is_warned_of():
    """The knowledge base is English: a name in another script gets confident-looking nonsense, so
    it is said; accented Latin names are not."""
    import warnings

    from raddiag.data.errors import InputWarning
    from raddiag.knowledge.map import check_names

    with pytest.warns(InputWarning, match=r"name 2 of 2 .*no Latin letter"):
        check_names(["Pneumonia", "\u80ba\u708e"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_names(["Maladie de M\u00e9n\u00e9trier", "COVID-19", "Pneumonie"])
