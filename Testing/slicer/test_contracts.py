"""Contracts between the Slicer-side files that no Slicer application checks for us in CI:
.ui widgets vs widget code and parameter nodes, CMake lists vs files, import rules, Python 3.9,
and the extension index entry vs CMake."""
import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Set

import pytest
from module_source import translatedTable

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"FAGANSuperRes": ROOT / "FAGANSuperRes", "FAGANTraining": ROOT / "FAGANTraining",
           "FAGANSelfTest": ROOT / "Testing" / "FAGANSelfTest"}
MODULE_FILE = MODULES["FAGANSuperRes"] / "FAGANSuperRes.py"
UI_MODULES = ("FAGANSuperRes", "FAGANTraining")
LIB_PACKAGES = {"FAGANSuperResLib", "FAGANTrainingLib"}
SLICER_SIDE = [ROOT / "FAGANSuperRes", ROOT / "FAGANTraining", ROOT / "Testing" / "FAGANSelfTest"]
FILE_SCOPE_ALLOWED = {"slicer", "vtk", "qt", "ctk", "SimpleITK", "numpy", "scipy"} | LIB_PACKAGES
QT_MODULES = {"qt", "ctk"}

# What widget code may do with each widget class (members and signals).
WIDGET_API: Dict[str, Set[str]] = {
    "QPushButton": {"connect", "enabled", "text", "toolTip", "click", "clicked(bool)"},
    "QComboBox": {"connect", "enabled", "clear", "addItem", "findData", "setCurrentIndex", "itemData",
                  "blockSignals", "setItemText", "activated(int)"},
    "QLabel": {"text", "setVisible"},
    "QSpinBox": {"enabled", "toolTip", "specialValueText"},
    "QDoubleSpinBox": {"toolTip"},
    "QCheckBox": {"enabled", "toolTip"},
    "qMRMLNodeComboBox": {"enabled"},
    "qMRMLSubjectHierarchyComboBox": {"enabled", "currentItem", "connect", "currentItemChanged(vtkIdType)"},
    "QProgressBar": {"value", "setVisible"},
    "QPlainTextEdit": {"appendPlainText", "toPlainText"},
    "ctkCollapsibleButton": {"enabled", "collapsed", "layout"},
    "ctkPathLineEdit": {"connect", "currentPath", "blockSignals", "currentPathChanged(QString)", "enabled"},
    "qMRMLCheckableNodeComboBox": {"connect", "checkedNodes", "nodeCount", "nodeFromIndex", "setCheckState",
                                   "blockSignals", "checkedNodesChanged()"},
    "qMRMLPlotWidget": {"setMRMLPlotViewNode"},
}


def uiWidgets(module: str) -> Dict[str, str]:
    """name -> class of every widget of the module's panel: its .ui file, and the form rows its code builds
    (``CODE_ROWS``: ``<name>Label`` and ``<name>ComboBox``)."""
    tree = ET.parse(MODULES[module] / "Resources" / "UI" / f"{module}.ui")
    widgets = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    for name, widgetClass in moduleTable(module, "CODE_ROWS").items():
        widgets.update({name + "Label": "QLabel", name + "ComboBox": widgetClass})
    return widgets


def moduleTable(module: str, name: str) -> Dict[str, str]:
    """A module-level literal dict of the module file (e.g. PARAMETER_WIDGETS); empty if absent."""
    for node in parse(MODULES[module] / f"{module}.py").body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return ast.literal_eval(node.value)
    return {}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def slicerSideFiles() -> List[Path]:
    return sorted(p for folder in SLICER_SIDE for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


# ---------------------------------------------------------------- .ui files and widget code


@pytest.mark.parametrize("module", UI_MODULES)
def test_ui_file_parses_and_connects_the_scene(module):
    tree = ET.parse(MODULES[module] / "Resources" / "UI" / f"{module}.ui")
    top = tree.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    inFile = {w.get("name"): w.get("class") for w in tree.iter("widget")}  # CODE_ROWS get the scene in code
    mrmlWidgets = {n for n, c in inFile.items() if c.startswith("qMRML") and c != "qMRMLWidget"}
    connected = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert mrmlWidgets == connected
    customs = {c.findtext("class") for c in tree.iter("customwidget")}
    assert {c for c in uiWidgets(module).values() if c.startswith(("qMRML", "ctk"))} <= customs


def uiUsages(tree: ast.Module):
    """(widget name, member or signal) for every ``<x>.ui.<name>[.<member>]`` in the code."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            parent = parents.get(node)
            member = parent.attr if isinstance(parent, ast.Attribute) else None
            yield node.attr, member
            call = parents.get(parent)
            if member == "connect" and isinstance(call, ast.Call) and isinstance(call.args[0], ast.Constant):
                yield node.attr, call.args[0].value


def widgetNameTables(tree: ast.Module) -> Dict[str, str]:
    """Widget name -> table name, for module-level ``*_WIDGETS = {"parameter": "widgetName"}`` tables
    (widgets reached with getattr)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.endswith("_WIDGETS"):
            for widget in ast.literal_eval(node.value).values():
                found[widget] = node.targets[0].id
    return found


@pytest.mark.parametrize("module", list(MODULES))
def test_every_ui_widget_used_exists_with_a_fitting_class(module):
    tree = parse(MODULES[module] / f"{module}.py")
    widgets = uiWidgets(module) if module in UI_MODULES else {k: v for m in UI_MODULES for k, v in uiWidgets(m).items()}
    usages = list(uiUsages(tree))
    assert usages or module == "FAGANSelfTest"
    for name, member in usages:
        assert name in widgets, f"self.ui.{name} is not in the .ui file"
        if member is not None:
            assert member in WIDGET_API[widgets[name]], f"{name} ({widgets[name]}) has no {member}"
    for name, table in widgetNameTables(tree).items():
        assert name in widgets, f"{table}: {name} is not in the .ui file"
        if table == "PATH_WIDGETS":
            assert widgets[name] == "ctkPathLineEdit", name
    for table in ("IN_PLANE_ROWS", "THROUGH_PLANE_ROWS", "CODE_ROWS"):  # form rows shown per mode: <name>Label + its field
        for row in moduleTable(module, table):
            assert widgets.get(row + "Label") == "QLabel", f"{table}: no {row}Label"
            assert [w for w in widgets if w.startswith(row) and w != row + "Label" and w.endswith(("ComboBox", "SpinBox"))], row
    for widget in moduleTable(module, "OPTION_CHECKBOXES"):
        assert widgets[widget] == "QCheckBox", widget


def parameterAnnotations(module: str) -> Dict[str, str]:
    """Parameter name -> annotation source of the module's @parameterNodeWrapper class."""
    tree = parse(MODULES[module] / f"{module}.py")
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{module} has no @parameterNodeWrapper class")


def fittingWidget(annotation: str) -> str:
    if annotation.startswith("vtkMRML"):
        return "qMRMLNodeComboBox"
    if "Choice(" in annotation:
        return "QComboBox"
    if annotation.startswith("Annotated[int") or annotation == "int":
        return "QSpinBox"
    if annotation.startswith("Annotated[float") or annotation == "float":
        return "QDoubleSpinBox"
    return {"bool": "QCheckBox", "str": "QLineEdit", "pathlib.Path": "ctkPathLineEdit"}.get(annotation, "?")


@pytest.mark.parametrize("module", UI_MODULES)
def test_parameter_widgets_fit_the_parameter_node(module):
    """PARAMETER_WIDGETS (connected with connectParametersToGui) and PATH_WIDGETS (synced by hand)
    name parameters and widgets that exist and fit; every parameter without its own code path is
    connected; the .ui carries no SlicerParameterName (it is used by connectGui only)."""
    annotations = parameterAnnotations(module)
    widgets = uiWidgets(module)
    connected = moduleTable(module, "PARAMETER_WIDGETS")
    assert connected
    for name, widget in connected.items():
        assert name in annotations, f"{name} is not a parameter"
        assert widgets[widget] == fittingWidget(annotations[name]), f"{name}: {annotations[name]} in a {widgets[widget]}"
    for name in moduleTable(module, "PATH_WIDGETS"):
        assert annotations[name] == "str"
    byHand = {"checkpointPath", "trainingVolumes", "configPath", "lossTable", "validationTable", "lossChart", "psnrChart"}
    assert set(annotations) == set(connected) | set(moduleTable(module, "PATH_WIDGETS")) | (byHand & set(annotations))
    assert "SlicerParameterName" not in (MODULES[module] / "Resources" / "UI" / f"{module}.ui").read_text(encoding="utf-8")


def calls(tree: ast.AST, name: str) -> List[ast.Call]:
    """Calls of ``<anything>.name(...)`` or ``name(...)``."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) == name or getattr(node.func, "id", None) == name)]


def nodeModifyBlocks(tree: ast.AST) -> List[ast.With]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.With)
            and any(isinstance(item.context_expr, ast.Call) and ast.unparse(item.context_expr.func).endswith("NodeModify")
                    for item in node.items)]


@pytest.mark.parametrize("path", slicerSideFiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_connect_gui_and_no_bare_start_modify(path):
    """connectGui returns None before Slicer 5.10 (its connection cannot be removed): use
    connectParametersToGui and keep its tag. StartModify/EndModify leave a node in modify state
    when something raises between them: use ``with slicer.util.NodeModify(node):``."""
    tree = parse(path)
    assert not calls(tree, "connectGui"), "use connectParametersToGui and keep its tag"
    inside = {id(call) for block in nodeModifyBlocks(tree) for call in calls(block, "StartModify")}
    for call in calls(tree, "StartModify") + calls(tree, "EndModify"):
        assert id(call) in inside, f"line {call.lineno}: {ast.unparse(call)} outside a NodeModify block"
    for call in calls(tree, "connectParametersToGui"):
        parent = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.value is call]
        assert parent and ast.unparse(parent[0].targets[0]).endswith("GuiTag"), f"line {call.lineno}: keep the tag"
    for call in calls(tree, "disconnectGui"):
        assert call.args and ast.unparse(call.args[0]).endswith("GuiTag"), f"line {call.lineno}: disconnect by tag"


def test_training_panel_defaults_are_the_bundled_recipe():
    """The FAGANTraining parameter node shows the bundled recipe's acquisition model and synthetic
    data mix (configs/fagan_x2_acquisition.yaml), the same values as TrainingSettings' defaults."""
    import yaml
    from FAGANTrainingLib import TrainingSettings

    defaults = {}
    for node in parse(MODULES["FAGANTraining"] / "FAGANTraining.py").body:
        if isinstance(node, ast.ClassDef) and node.name == "FAGANTrainingParameterNode":
            defaults = {s.target.id: ast.literal_eval(s.value) for s in node.body if isinstance(s, ast.AnnAssign) and s.value}
    data = yaml.safe_load((ROOT / "configs" / "fagan_x2_acquisition.yaml").read_text(encoding="utf-8"))["data"]
    degradation, synthesis = data["degradation"], data["synthesis"]
    expected = {"acquisition": degradation["primary"], "kspaceWeight": degradation["kspace_weight"],
                "bicubicWeight": degradation["bicubic_weight"], "gaussianWeight": degradation["gaussian_weight"],
                "partialFourierProbability": degradation["partial_fourier_probability"],
                "noiseProbability": degradation["noise_probability"], "noiseMin": degradation["noise"][0],
                "noiseMax": degradation["noise"][1], "syntheticFraction": data["synthetic_fraction"],
                "templateWeight": synthesis["template_weight"], "brainWeight": synthesis["brain_weight"],
                "shapesWeight": synthesis["shapes_weight"]}
    settings = TrainingSettings(outputDir="")
    for name, value in expected.items():
        assert defaults[name] == value == getattr(settings, name), name


def test_contract_check_catches_violations():
    """The helpers of the check above see connectGui and a bare StartModify, and NodeModify blocks."""
    bad = ast.parse("tag = node.connectGui(self.ui)\nw = n.StartModify()\nn.EndModify(w)\n")
    assert calls(bad, "connectGui") and calls(bad, "StartModify") and not nodeModifyBlocks(bad)
    good = ast.parse("with slicer.util.NodeModify(n):\n    n.x = 1\n")
    assert len(nodeModifyBlocks(good)) == 1


@pytest.mark.parametrize("module", list(MODULES))
def test_module_has_the_template_classes(module):
    classes = {n.name: n for n in parse(MODULES[module] / f"{module}.py").body if isinstance(n, ast.ClassDef)}
    for suffix, base in (("", "ScriptedLoadableModule"), ("Widget", "ScriptedLoadableModuleWidget"),
                         ("Logic", "ScriptedLoadableModuleLogic"), ("Test", "ScriptedLoadableModuleTest")):
        assert base in [ast.unparse(b) for b in classes[module + suffix].bases]
    assert "runTest" in {f.name for f in classes[module + "Test"].body if isinstance(f, ast.FunctionDef)}


# ---------------------------------------------------------------- import rules and Python 3.9


def fileScopeImports(tree: ast.Module) -> List[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", slicerSideFiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_scope_imports_are_slicer_safe(path):
    """Third-party packages (torch, fagan_engine, nibabel, ...) are imported inside functions only;
    Lib packages are Qt-free."""
    isLib = any(part in LIB_PACKAGES for part in path.parts)
    allowed = FILE_SCOPE_ALLOWED - (QT_MODULES if isLib else set())
    for name in fileScopeImports(parse(path)):
        assert name in sys.stdlib_module_names or name in allowed, f"{name} imported at file scope"
    if isLib:
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(qt|ctk)\b", source, re.MULTILINE), "Lib packages must not use Qt"


@pytest.mark.parametrize("module", list(MODULES))
def test_module_file_runs_nothing_at_import(module):
    """Only imports, definitions, decorators (template hooks) and literal constants at file scope."""
    for node in parse(MODULES[module] / f"{module}.py").body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        assert isinstance(node, ast.Assign), f"line {node.lineno}: {ast.unparse(node)[:60]}"
        ast.literal_eval(node.value)  # raises for anything but a literal


def translationCalls(tree: ast.Module):
    """Every ``_(...)`` and ``translate(...)`` call of a file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "translate"):
            yield node


@pytest.mark.parametrize("path", slicerSideFiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_translated_texts_are_literals(path):
    """Qt's lupdate extracts only literal texts: ``_("text")`` and ``translate("Context", "text")``. A variable or
    f-string passed to them would reach no translator (tables of texts are functions returning ``_()`` calls)."""
    for call in translationCalls(parse(path)):
        assert not call.keywords and len(call.args) == (1 if call.func.id == "_" else 2), ast.unparse(call)
        for argument in call.args:
            assert isinstance(argument, ast.Constant) and isinstance(argument.value, str), \
                f"{path.name}:{call.lineno}: {ast.unparse(call)[:80]}"


def test_translation_check_catches_variables():
    bad = ast.parse('label = "x"\n_(label)\n_(f"{label}")\ntranslate("C", label)\n_("ok")')
    literal = [all(isinstance(a, ast.Constant) for a in call.args) for call in translationCalls(bad)]
    assert literal == [False, False, False, True]


def test_python_3_9_compatible():
    vermin = Path(sys.executable).with_name("vermin")
    proc = subprocess.run([str(vermin), "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
                           *map(str, SLICER_SIDE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- CMake


def cmakeLists(path: Path) -> Dict[str, List[str]]:
    """``set(NAME items...)`` blocks of a CMakeLists.txt, with ${MODULE_NAME} expanded."""
    text = re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))
    moduleName = re.search(r"set\(MODULE_NAME\s+(\S+)\)", text)
    if moduleName:
        text = text.replace("${MODULE_NAME}", moduleName.group(1))
    return {m.group(1): m.group(2).split() for m in re.finditer(r"set\((\w+)\s+([^)]*)\)", text)}


def relativeFiles(folder: Path, patterns: List[str]) -> Set[str]:
    return {str(p.relative_to(folder)).replace("\\", "/") for pattern in patterns for p in folder.glob(pattern)
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.parametrize("module", list(MODULES))
def test_module_cmake_lists_exactly_the_files(module):
    folder = MODULES[module]
    lists = cmakeLists(folder / "CMakeLists.txt")
    assert set(lists["MODULE_PYTHON_SCRIPTS"]) == relativeFiles(folder, ["*.py", "*Lib/*.py"])
    assert set(lists.get("MODULE_PYTHON_RESOURCES", [])) == relativeFiles(folder, ["Resources/UI/*.ui", "Resources/Icons/*.png"])
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    for icon in folder.glob("Resources/Icons/*.png"):
        assert icon.read_bytes()[16:24] == (128).to_bytes(4, "big") * 2, f"{icon.name} must be 128x128"


def test_top_level_cmake_ships_the_engine_and_all_modules():
    lists = cmakeLists(ROOT / "CMakeLists.txt")
    engine = ROOT / "fagan_engine"
    assert set(lists["FAGAN_ENGINE_PYTHON_SCRIPTS"]) == {"fagan_engine/" + p for p in relativeFiles(engine, ["**/*.py"])}
    bundled = relativeFiles(engine, ["checkpoints/*.safetensors", "checkpoints/*.json", "checkpoints/*.onnx", "configs/*.yaml"])
    assert set(lists.get("FAGAN_ENGINE_PYTHON_RESOURCES", [])) == {"fagan_engine/" + p for p in bundled}
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    subdirs = re.findall(r"add_subdirectory\(([^)]+)\)", text)
    assert subdirs == ["FAGANSuperRes", "FAGANTraining", "Testing/FAGANSelfTest"]
    assert all((ROOT / d / "CMakeLists.txt").is_file() for d in subdirs)
    assert re.search(r"project\(FAGANSuperResolution\)", text)
    assert lists["EXTENSION_DEPENDS"] == ['"PyTorch"']


def cmakeValue(name: str) -> str:
    match = re.search(rf'set\({name}\s+"([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert match, name
    return match.group(1)


REPOSITORY = "https://github.com/fagan-superres/SlicerFAGANSuperResolution"
CONTRIBUTOR = re.compile(r"^[^(),]+ \([^()]+\)$")  # "Firstname Lastname (Organisation)"


def test_extension_metadata_and_images():
    assert cmakeValue("EXTENSION_HOMEPAGE") == REPOSITORY
    assert REPOSITORY.rsplit("/", 1)[1].startswith("Slicer")  # extension index naming rule
    assert len(cmakeValue("EXTENSION_DESCRIPTION")) > 40
    raw = REPOSITORY.replace("github.com", "raw.githubusercontent.com") + "/main/"
    urls = [cmakeValue("EXTENSION_ICONURL")] + cmakeValue("EXTENSION_SCREENSHOTURLS").split()
    for url in urls:
        assert url.startswith(raw + "docs/images/") and url.endswith((".png", ".jpg"))
    icon = ROOT / cmakeValue("EXTENSION_ICONURL")[len(raw):]
    assert icon.read_bytes()[16:24] == (128).to_bytes(4, "big") * 2
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")


def test_index_entry_agrees_with_cmake():
    entry = json.loads((ROOT / "FAGANSuperResolution.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}  # schema v1.0.2
    assert set(entry) <= allowed and entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["category"] == "Image Synthesis"
    assert entry["build_dependencies"] == cmakeValue("EXTENSION_DEPENDS").split()
    assert entry["scm_url"] in (cmakeValue("EXTENSION_HOMEPAGE"), cmakeValue("EXTENSION_HOMEPAGE") + ".git")
    assert entry["build_subdirectory"] == "." and 1 <= entry["tier"] <= 5


def test_the_5_6_index_entry_agrees_with_cmake_and_the_catalog_entry():
    """Slicer 5.6's ExtensionsIndex branch still reads .s4ext files (5.8 on: the JSON catalog entry)."""
    fields = {}
    for line in (ROOT / "FAGANSuperResolution.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            fields[key] = value.strip()
    entry = json.loads((ROOT / "FAGANSuperResolution.json").read_text(encoding="utf-8"))
    assert fields["scm"] == "git" and fields["scmurl"] == entry["scm_url"] and fields["scmrevision"] == entry["scm_revision"]
    assert fields["category"] == entry["category"] and fields["build_subdirectory"] == entry["build_subdirectory"]
    assert fields["depends"].split() == entry["build_dependencies"] == cmakeValue("EXTENSION_DEPENDS").split()
    for key, cmake in (("homepage", "EXTENSION_HOMEPAGE"), ("contributors", "EXTENSION_CONTRIBUTORS"),
                       ("description", "EXTENSION_DESCRIPTION"), ("iconurl", "EXTENSION_ICONURL"),
                       ("screenshoturls", "EXTENSION_SCREENSHOTURLS")):
        assert fields[key] == cmakeValue(cmake), key
    assert fields["enabled"] == "1" and fields["status"]


def test_cmake_follows_the_5_10_extension_template():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)" in text
    assert "EXTENSION_CATEGORY" not in re.sub(r"#[^\n]*", "", text)  # the catalog entry has it (Slicer >= 5.8)
    assert re.search(r"if\(BUILD_TESTING\)\s*add_subdirectory\(Testing/FAGANSelfTest\)\s*endif\(\)", text)


def test_contributors_and_repository_name_agree_everywhere():
    cmakeContributors = [c.strip() for c in cmakeValue("EXTENSION_CONTRIBUTORS").split(",")]
    assert cmakeContributors and all(CONTRIBUTOR.match(c) for c in cmakeContributors), cmakeContributors
    for module in UI_MODULES:
        tree = parse(MODULES[module] / f"{module}.py")
        values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") in ("CONTRIBUTORS", "REPOSITORY_URL")}
        assert values["CONTRIBUTORS"] == cmakeContributors and values["REPOSITORY_URL"] == REPOSITORY
    for path in [ROOT / "FAGANSuperResolution.json", ROOT / "docs" / "user-guide.md", *slicerSideFiles()]:
        text = path.read_text(encoding="utf-8")
        assert "fagan-superres/FAGANSuperResolution" not in text, f"{path.name}: old repository name"
        assert 'SuperRes team"' not in text, f"{path.name}: contributor without organisation"
    entry = json.loads((ROOT / "FAGANSuperResolution.json").read_text(encoding="utf-8"))
    assert entry["scm_url"] == REPOSITORY + ".git"


def test_engine_flags_the_modules_pass_exist_in_the_engine():
    """Every fagan_engine sr flag the Slicer side passes is one the shipped engine's parser accepts
    (the panel disables a feature whose flag is missing, so a typo would silently disable it)."""
    from FAGANSuperResLib import engine
    from FAGANSuperResLib.options import engineArguments, engineFlag, runOptions

    flags = {engineFlag(name) for name in moduleTable("FAGANSuperRes", "OPTION_CHECKBOXES").values()} | {"--output-dir", "--report"}
    for options in (runOptions(checkpoint="c", batch_size=2, tile_size=64, uncertainty=True, enforce_consistency=True, ensemble=2),
                    runOptions(mode="through-plane", target_spacing=1.0, slice_thickness=3.0, fit_iterations=5, ensemble=4)):
        flags |= {a for a in engineArguments(options, True) if a.startswith("--")}
    assert flags <= engine.engineSrOptions(), sorted(flags - engine.engineSrOptions())


def test_lib_spells_no_run_option_flag():
    """The Slicer side takes run-option and map flags from the engine (``RunOptions.cli_arguments``, ``CLI_FLAGS``,
    ``MAP_FLAGS``): none of them stands in a Lib file as a string, nor in a module's tables."""
    from fagan_engine.util.options import CLI_FLAGS, MAP_FLAGS

    engineFlags = set(CLI_FLAGS.values()) | set(MAP_FLAGS.values()) | {"--through-plane", "--no-enforce-consistency"}
    for package in (ROOT / "FAGANSuperRes" / "FAGANSuperResLib", ROOT / "FAGANTraining" / "FAGANTrainingLib"):
        for path in sorted(package.glob("*.py")):
            spelled = {n.value for n in ast.walk(parse(path)) if isinstance(n, ast.Constant) and n.value in engineFlags}
            assert not spelled, f"{path.name} spells {sorted(spelled)}"
    for module, folder in MODULES.items():
        tables = [n.value for n in parse(folder / f"{module}.py").body if isinstance(n, ast.Assign)]
        spelled = {n.value for t in tables for n in ast.walk(t) if isinstance(n, ast.Constant) and n.value in engineFlags}
        assert not spelled, f"{module}.py's tables spell {sorted(spelled)}"


def test_panel_choices_are_the_engines():
    """The comboboxes offer exactly the engine's choices (listed once in the Lib: the parameter node
    is declared before the engine may be imported)."""
    from FAGANSuperResLib import options

    from fagan_engine.util import config
    from fagan_engine.util import options as engineOptions

    assert options.SCALES == config.SCALES and options.PLANES == config.PLANES
    assert options.ACQUISITIONS == config.ACQUISITIONS
    assert options.METHODS == engineOptions.METHODS and options.MODES == engineOptions.MODES
    from FAGANSuperResLib.stacks import STACKS_MODE

    panelModes = moduleTable("FAGANSuperRes", "PANEL_MODES")  # the engine's modes, then Combine thick stacks
    assert panelModes == options.MODES + (STACKS_MODE,) and set(translatedTable(MODULE_FILE, "modeLabels")) == set(panelModes)
    assert sorted(options.DEVICES) == sorted(engineOptions.DEVICES)
    assert options.ENSEMBLES == (0,) + engineOptions.ENSEMBLE_SIZES  # 0: the engine's default
    assert options.THROUGH_PLANE_ENSEMBLES == engineOptions.THROUGH_PLANE_ENSEMBLE_SIZES
    assert set(translatedTable(MODULE_FILE, "ensembleLabels")) == set(options.ENSEMBLES)
    assert len(translatedTable(MODULE_FILE, "stackLabels")) == 3  # the most stacks the panel takes
    assert set(translatedTable(MODULE_FILE, "stackRowTexts")) == set(moduleTable("FAGANSuperRes", "CODE_ROWS"))
    assert set(translatedTable(MODULE_FILE, "fitTooltips")) == {False, True}


def test_map_kinds_are_the_engines():
    """The maps the Lib shows are engine map kinds, each with a title and a colour table."""
    from FAGANSuperResLib import maps

    from fagan_engine.util.options import MAP_KINDS as ENGINE_MAP_KINDS

    assert set(maps.MAP_KINDS) <= set(ENGINE_MAP_KINDS) and set(maps.COLOR_NODE_NAMES) == set(maps.MAP_KINDS)


def test_the_nan_option_offers_the_policy_the_engine_message_names():
    """The engine refuses an input with NaN voxels saying "use the 'zero' NaN policy": the panel offers it (Advanced, a
    checkbox on the parameter node, disabled while the engine lacks its flag), its tooltip names it the same way and
    the panel passes only the engine's policies."""
    import numpy as np
    import SimpleITK as sitk

    from fagan_engine.io.volume_io import validate_image
    from fagan_engine.util.errors import InputError
    from fagan_engine.util.options import NAN_POLICIES

    assert moduleTable("FAGANSuperRes", "PARAMETER_WIDGETS")["nanToZero"] == "nanToZeroCheckBox"
    assert moduleTable("FAGANSuperRes", "OPTION_CHECKBOXES")["nanToZeroCheckBox"] == "nan_policy"
    assert parameterAnnotations("FAGANSuperRes")["nanToZero"] == "bool"
    tree = ET.parse(MODULES["FAGANSuperRes"] / "Resources" / "UI" / "FAGANSuperRes.ui")
    advanced = next(w for w in tree.iter("widget") if w.get("name") == "advancedCollapsibleButton")
    checkbox = next(w for w in advanced.iter("widget") if w.get("name") == "nanToZeroCheckBox")
    tooltip = checkbox.find("property[@name='toolTip']/string").text
    with pytest.raises(InputError) as refusal:
        validate_image(sitk.GetImageFromArray(np.full((2, 3, 4), np.nan, np.float32)))
    assert "'zero' NaN policy" in str(refusal.value) and "'zero' NaN policy" in tooltip
    method = next(n for n in ast.walk(parse(MODULE_FILE)) if isinstance(n, ast.FunctionDef) and n.name == "nanPolicy")
    returned = {n.value for r in ast.walk(method) if isinstance(r, ast.Return) for n in ast.walk(r.value)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert returned == set(NAN_POLICIES)
