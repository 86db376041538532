"""Forms of the reviewer workbench: they only shape what the browser sent; the rules of a
decision (reason required, correction differs from the output...) live in `review_submit`."""

from django import forms

from reviews.models import Review


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=Review.Decision.choices)
    # strip=False: whitespace is part of a correction and of the diff stored with it.
    corrected_output = forms.CharField(required=False, strip=False)
    reason = forms.CharField(required=False)
    comment = forms.CharField(required=False, max_length=5000)

    def clean_corrected_output(self) -> str:
        # Browsers send a textarea's line breaks as CRLF whatever the page holds; the model's
        # output uses LF, and the stored diff must not mark every line break as changed.
        return self.cleaned_data["corrected_output"].replace("\r\n", "\n")

    def clean_reason(self) -> str:
        return self.cleaned_data["reason"].replace("\r\n", "\n")

    def service_arguments(self) -> dict[str, str]:
        """Arguments for `review_submit`. The editor's text travels with every decision (the
        textarea is part of the form), but only a correction may carry it."""
        data = self.cleaned_data
        decision = data["decision"]
        return {
            "decision": decision,
            "corrected_output": data["corrected_output"]
            if decision == Review.Decision.CORRECT
            else "",
            "reason": data["reason"],
            "comment": data["comment"],
        }
