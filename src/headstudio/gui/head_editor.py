"""The head editor panel: choose a head operation, see its live preview, apply it as an undoable edit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QWidget

from headstudio.core.errors import InputError
from headstudio.core.model.shape_text import format_shape, parse_sizes

from .controller import DocumentController
from .head_editor_form import ADD, CUT, REMOVE, HeadEditorForm
from .palette import problem_color, warning_color

if TYPE_CHECKING:
    from headstudio.core.edits.base import Edit, Preview
    from headstudio.core.model.heads import HeadInfo

PREVIEW_DELAY_MS = 150


class InputProblem(ValueError):
    """The panel's inputs do not describe an edit yet (e.g. hidden sizes 'abc')."""


def format_delta(before: int, after: int) -> str:
    """'11,689,512 → 11,181,642 (−507,870)'."""
    delta = after - before
    sign = "+" if delta > 0 else "−" if delta < 0 else "±"
    return f"{before:,} → {after:,} ({sign}{abs(delta):,})"


def describe_head_sizes(head: HeadInfo | None) -> str:
    """' (Linear 512 → 1000)' for a HeadInfo; '' when unknown."""
    if head is None:
        return ""
    sizes = f" {head.in_features} → {head.out_features}" if head.in_features else ""
    return f" ({head.type}{sizes})"


class HeadEditor(HeadEditorForm):
    """Mark / preview / apply panel for the head; listens to the controller, edits only via push_edit."""

    previewUpdated = Signal()  # the preview (or a problem with the inputs) is on screen

    def __init__(self, controller: DocumentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.preview: Preview | None = None
        self._shown_head: tuple[int, str] | None = None
        self._chosen = False  # the user has set up an edit: until then a preview would show no change
        self._attaching = False  # the attach dialog is open: its previews own the controller's preview queue
        self._timer = QTimer(self, singleShot=True, interval=PREVIEW_DELAY_MS)
        self._timer.timeout.connect(self.refresh_preview)
        self._color_messages()
        self._connect()
        self._on_document()

    def _connect(self) -> None:
        ctl = self.controller
        ctl.documentChanged.connect(self._on_document)
        ctl.modelEdited.connect(self._on_model_edited)
        ctl.traceReady.connect(self._on_trace)
        ctl.headMarked.connect(self._on_head)
        ctl.selectionChanged.connect(self._on_selection)
        ctl.previewReady.connect(self._on_previewed)
        self.operation.currentIndexChanged.connect(self.pages.setCurrentIndex)
        self.headKind.currentIndexChanged.connect(self._on_kind)
        for signal in (
            self.operation.currentIndexChanged,
            self.numClasses.valueChanged,
            self.headKind.currentIndexChanged,
            self.hiddenSizes.textChanged,
            self.activation.currentIndexChanged,
            self.dropout.valueChanged,
            self.keepClasses.toggled,
            self.labels.textChanged,
            self.addHeadName.textChanged,
            self.addHeadClasses.valueChanged,
        ):
            signal.connect(self._on_input)
        self.labels.textChanged.connect(self._on_labels)
        self.applyButton.clicked.connect(self.apply)
        self.freezeButton.clicked.connect(self.freeze_backbone)
        self.attachButton.clicked.connect(self.attach_from_file)

    def _on_input(self, *_: Any) -> None:
        self._chosen = True
        self.controller.discard_previews()  # a preview of the inputs as they were must not show now
        self.preview = None
        self._update_buttons()
        self.schedule_preview()

    def _on_kind(self, index: int) -> None:
        self.hiddenSizes.setEnabled(index == 1)
        self.activation.setEnabled(index == 1)

    # ----- what the inputs mean
    @property
    def head_path(self) -> str | None:
        """The head being edited: the one the user marked, else the detected head."""
        return self.controller.head_path

    def current_edit(self) -> Edit:
        """The core edit the inputs describe; raises InputProblem when they describe none."""
        from headstudio.core import edits

        op = self.operation.currentIndex()
        if op == CUT:
            path = self.controller.selected_path
            if not path:
                raise InputProblem("select the module to cut after in the tree")
            return edits.CutAfter(path)
        if op == ADD:
            name = self.addHeadName.text().strip()
            if not name.isidentifier():
                raise InputProblem(f"head name '{name}' must be a Python identifier, e.g. aux")
            return edits.AddHead(name, self.addHeadClasses.value(), at=self._require_head())
        if op == REMOVE:
            return edits.RemoveHead(self._require_head())
        return self._replace_edit(edits)

    def _replace_edit(self, edits: Any) -> Edit:
        hidden = self._hidden_sizes() if self.headKind.currentIndex() == 1 else ()
        classes = self.numClasses.value()
        keep = self._keep_classes(classes) if self.keepClasses.isChecked() else None
        return edits.ReplaceHead(
            self._require_head(),
            classes,
            hidden=hidden,
            activation=self.activation.currentText() or "relu",
            dropout=self.dropout.value(),
            keep_classes=keep,
            labels=self._labels(),
        )

    def _on_labels(self, *_: Any) -> None:
        """Naming N classes sets the class count to N."""
        names = self._labels()
        if names:
            self.numClasses.setValue(len(names))

    def _labels(self) -> tuple[str, ...] | None:
        """The class names typed in the labels field (comma separated), or None when it is empty."""
        text = self.labels.text().strip()
        return tuple(name.strip() for name in text.split(",")) if text else None

    def _hidden_sizes(self) -> tuple[int, ...]:
        try:
            return parse_sizes(self.hiddenSizes.text(), "list of hidden sizes", "512,256")
        except InputError as err:
            raise InputProblem(str(err)) from None

    def _keep_classes(self, classes: int) -> int:
        """The trained rows to keep: the first min(old, new) classes of the current head."""
        old = self._class_count(self._head_info()) or classes
        return min(old, classes)  # the core keeps the first N classes' rows (a detector's background too)

    def _class_count(self, head: HeadInfo | None) -> int | None:
        """Classes as the user counts them: a detector's per-anchor classes without background."""
        doc = self.controller.document
        if doc is None or head is None:
            return None
        from headstudio.core.edits.paired import class_count

        return class_count(doc, head.path) or head.out_features

    def _require_head(self) -> str:
        if not self.head_path:
            raise InputProblem("no head is marked: select a module and use Mark as head")
        return self.head_path

    def _head_info(self) -> HeadInfo | None:
        doc = self.controller.document
        if doc is None or not self.head_path:
            return None
        from headstudio.core.model.heads import describe_head

        trace = doc.trace()
        try:
            return describe_head(doc.model, self.head_path, trace.inputs, trace.outputs)
        except AttributeError:  # the marked path no longer exists after an edit
            return None

    # ----- preview
    def schedule_preview(self, *_: Any) -> None:
        """Recompute the preview shortly (inputs change in bursts while the user types)."""
        self._timer.start()

    def refresh_preview(self) -> None:
        """Start the edit's preview (background); input problems show in red at once and disable Apply."""
        self._timer.stop()
        if self._attaching:
            return
        self.controller.discard_previews()
        self.preview = None
        self._update_buttons()
        if self.controller.document is None or not self.ready or not self._chosen:
            self._show_idle(self._idle_text())
            return
        try:
            edit = self.current_edit()
        except InputProblem as err:
            self._on_previewed(None, str(err))
            return
        self.controller.request_preview(edit)

    def _on_previewed(self, preview: Preview | None, problem: str) -> None:
        self.preview = preview
        if preview is None:
            self._show_problems([problem], [])
        else:
            self._show_preview(preview)
        self.previewUpdated.emit()

    def _show_preview(self, p: Preview) -> None:
        before, after = format_shape(p.output_before, "—"), format_shape(p.output_after, "—")
        self.previewOutput.setText(f"{before} → {after}")
        self.previewParams.setText(format_delta(p.params_before, p.params_after))
        self.previewTrainable.setText(format_delta(p.trainable_before, p.trainable_after))
        layers = p.layers
        self.previewLayers.setText(
            "\n".join(f"{path}: {format_shape(a, '—')} → {format_shape(b, '—')}" for path, a, b in layers)
        )
        hidden_sizes = any(after != p.output_after for _, _, after in layers)  # a detector's classes
        self.previewLayers.setVisible(len(layers) > 1 or hidden_sizes)
        self._show_messages(list(p.problems), list(p.warnings))
        self._update_buttons()

    def _show_problems(self, problems: list[str], warnings: list[str]) -> None:
        for label in (self.previewOutput, self.previewParams, self.previewTrainable):
            label.setText("—")
        self.previewLayers.setVisible(False)
        self._show_messages(problems, warnings)
        self.applyButton.setEnabled(False)

    def _show_idle(self, message: str) -> None:
        for label in (self.previewParams, self.previewTrainable):
            label.setText("—")
        self._show_messages([], [])
        self.previewOutput.setText(message)

    def _show_messages(self, problems: list[str], warnings: list[str]) -> None:
        self.previewProblems.setText("\n".join(f"✖ {p}" for p in problems))
        self.previewProblems.setVisible(bool(problems))
        self.previewWarnings.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.previewWarnings.setVisible(bool(warnings))

    def _color_messages(self) -> None:
        for label, color in (
            (self.previewProblems, problem_color(self.palette())),
            (self.previewWarnings, warning_color(self.palette())),
        ):
            palette = label.palette()
            palette.setColor(QPalette.ColorRole.WindowText, color)
            label.setPalette(palette)

    def changeEvent(self, event: QEvent) -> None:
        """Follow the system palette (dark mode) for the red and amber messages."""
        if event.type() == QEvent.Type.PaletteChange:
            self._color_messages()
        super().changeEvent(event)

    # ----- actions
    def apply(self) -> None:
        """Push the edit the form shows as an undoable command (the controller validates it first).

        A preview still computing does not hold it up: Apply acts on the inputs, not on the preview.
        """
        if self.controller.document is None:
            return
        try:
            edit = self.current_edit()
        except InputProblem as err:
            self._show_problems([str(err)], [])
            return
        self.controller.push_edit(edit)

    def freeze_backbone(self) -> None:
        """Freeze everything but the head(s), with the BatchNorm-eval choice, as one undoable edit."""
        from headstudio.core import edits

        doc, head = self.controller.document, self.head_path
        if doc is None:
            return
        marked = [head] if head and head not in doc.trace().heads else None  # else every detected head
        self.controller.push_edit(edits.FreezeBackbone(bn_eval=self.bnEval.isChecked(), heads=marked))

    def attach_from_file(self) -> None:
        """Attach head from file: read and check it, show its fit (offering an adapter), push the edit."""
        from headstudio.core import edits
        from headstudio.core.errors import HeadStudioError
        from headstudio.core.head_files import read_head_file

        from . import attach_head

        ctl = self.controller
        if ctl.document is None or not self.head_path:
            ctl.errorRaised.emit("mark the head to attach at first: select a module and use Mark as head")
            return
        path = attach_head.ask_head_path(self)
        if not path:
            return
        if not self.ready:
            ctl.errorRaised.emit("the model's shapes are still being traced; attach the head once they show")
            return
        at = self.head_path  # the fit below reads the finished trace
        try:
            loaded = read_head_file(path)
            features, _ = edits.head_fit(ctl.document, at, loaded.description)
        except HeadStudioError as err:
            ctl.errorRaised.emit(str(err))
            return

        def edit_for(choice: attach_head.AttachChoice) -> Edit:
            recorded = (str(loaded.path.resolve()), loaded.sha256, loaded.description, choice.adapter)
            if choice.mode == "add":
                return edits.AddHeadFromFile(choice.name, at, *recorded)
            return edits.ReplaceHeadFromFile(at, *recorded)

        self._timer.stop()
        self._attaching = True
        try:
            choice = attach_head.ask_attach(self, loaded, at, features, ctl, edit_for)
        finally:
            self._attaching = False
        ctl.discard_previews()
        if choice is not None:
            ctl.push_edit(edit_for(choice))
        self.schedule_preview()  # the preview box shows the form's edit again

    # ----- controller signals
    @property
    def ready(self) -> bool:
        """Shapes for the current model are traced (the head's sizes and a preview's 'before' are known)."""
        return self.controller.traced

    def _on_document(self) -> None:
        doc = self.controller.document
        self.setEnabled(doc is None or doc.editable)
        self._on_head(self.head_path or "")

    def _on_model_edited(self) -> None:
        self._chosen = False  # the edit is done; a preview of the same inputs would show no change
        self.preview = None
        self._update_buttons()
        self.schedule_preview()

    def _on_trace(self) -> None:
        self._on_head(self.head_path or "")

    def _update_buttons(self) -> None:
        """Apply follows the form: enabled when it describes an edit no finished preview has refused."""
        doc = self.controller.document
        editable = doc is not None and doc.editable
        self.freezeButton.setEnabled(editable)
        self.attachButton.setEnabled(editable)
        refused = self.preview is not None and not self.preview.ok
        self.applyButton.setEnabled(editable and self._chosen and not refused and self._describes_edit())

    def _describes_edit(self) -> bool:
        try:
            self.current_edit()
        except InputProblem:
            return False
        return True

    def _on_head(self, path: str) -> None:
        doc = self.controller.document
        if doc is None:
            self.headLabel.setText("No model open")
        elif not path:
            self.headLabel.setText("No head detected: select a module and use Mark as head")
        else:
            head = self._head_info() if self.ready else None
            self.headLabel.setText(f"Head: <b>{path}</b>{describe_head_sizes(head)}")
            self._follow_head(path, head)
        self._on_selection(self.controller.selected_path or "")
        self._update_buttons()
        if self.preview is None:
            self._show_idle(self._idle_text())
        self.schedule_preview()

    def _idle_text(self) -> str:
        if self.controller.document is None:
            return "open a model"
        if not self.ready:
            return "waiting for shapes…"
        return "computing…" if self._chosen else "set the class count or pick an operation to preview it"

    def _follow_head(self, path: str, head: HeadInfo | None) -> None:
        """A newly shown head starts the class count at its current number of outputs."""
        key = (id(self.controller.document), path)
        count = self._class_count(head)
        if head is not None and count and key != self._shown_head:
            self._shown_head = key
            self.numClasses.setValue(count)
            self._chosen = False

    def _on_selection(self, path: str) -> None:
        self.cutLabel.setText(
            f"Keep everything up to and including <b>{path}</b>; the model returns its output."
            if path
            else "Select the module to cut after in the tree."
        )
        if self.operation.currentIndex() == CUT:
            self.schedule_preview()
