{{/*
Names. The full name ("<release>-aistack", or fullnameOverride) names every object, and is the
leader-election Lease's name too.
*/}}
{{- define "aistack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aistack.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aistack.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "aistack.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aistack
{{- end }}

{{- define "aistack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aistack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: scheduler
{{- end }}

{{- define "aistack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aistack.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aistack.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret the service's serving certificate lives in, whichever way it is made. */}}
{{- define "aistack.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "aistack.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The Helm-generated serving certificate, as JSON {"crt", "key", "ca"} (base64 PEM): the one in
the cluster's Secret when there is one (upgrades keep it, `lookup`), else a new CA and a
certificate signed by it for the Service's DNS names. Kept on the root context once made, so
that every template of one render sees the same certificate.
*/}}
{{- define "aistack.generatedTLS" -}}
{{- if not (hasKey . "aistackGeneratedTLS") }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "aistack.tlsSecretName" .) }}
{{- $data := $secret.data | default dict }}
{{- $tls := dict "crt" (index $data "tls.crt" | default "") "key" (index $data "tls.key" | default "") "ca" (index $data "ca.crt" | default "") }}
{{- if not (and $tls.crt $tls.key $tls.ca) }}
{{- $days := int .Values.tls.validityDays }}
{{- $ca := genCA (printf "%s-ca" (include "aistack.fullname" .)) $days }}
{{- $dnsNames := include "aistack.serviceDNSNames" . | fromJsonArray }}
{{- $cert := genSignedCert (first $dnsNames) nil $dnsNames $days $ca }}
{{- $tls = dict "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "ca" ($ca.Cert | b64enc) }}
{{- end }}
{{- $_ := set . "aistackGeneratedTLS" $tls }}
{{- end }}
{{- get . "aistackGeneratedTLS" | toJson }}
{{- end }}

{{/* Service DNS names the certificate must cover: the API server calls <svc>.<ns>.svc. */}}
{{- define "aistack.serviceDNSNames" -}}
{{- $svc := include "aistack.fullname" . }}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/*
The config.yaml the service reads: values.config plus what only the chart knows (the Lease's
name). Rendered here once so that the ConfigMap and the Deployment's checksum see the same text.
*/}}
{{- define "aistack.configYaml" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config.leader_election "lease_name" (include "aistack.fullname" .) }}
{{- $_ := set $config "allocation_key_file" "/etc/aistack/allocation.key" }}
{{- if $config.gpu_reservations.enabled }}
{{- $_ := set $config.gpu_reservations "image" (include "aistack.image" .) }}
{{- $_ := set $config.gpu_reservations "service_account" (printf "%s-gpu-reservation" (include "aistack.fullname" .)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Cross-value rules that JSON Schema cannot say clearly. Each failure names the values to change.
*/}}
{{- define "aistack.validate" -}}
{{- $le := .Values.config.leader_election }}
{{- if and (gt (int .Values.replicas) 1) (not $le.enabled) }}
{{- fail (printf "config.leader_election.enabled is false with replicas: %d; two schedulers without a leader would place the same GPUs twice. Set replicas: 1 or enable leader election." (int .Values.replicas)) }}
{{- end }}
{{- if not (lt (float64 $le.renew_deadline_seconds) (float64 $le.lease_duration_seconds)) }}
{{- fail "config.leader_election.renew_deadline_seconds must be less than lease_duration_seconds" }}
{{- end }}
{{- if not (lt (float64 $le.retry_period_seconds) (float64 $le.renew_deadline_seconds)) }}
{{- fail "config.leader_election.retry_period_seconds must be less than renew_deadline_seconds" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (gt (int .Values.replicas) 1) (ge (int $pdb.minAvailable) (int .Values.replicas)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be less than replicas (%d), or no node running the service could ever be drained" (int $pdb.minAvailable) (int .Values.replicas)) }}
{{- end }}
{{- if and .Values.certManager.enabled .Values.tls.existingSecret }}
{{- fail "certManager.enabled and tls.existingSecret are two ways to get the webhook certificate; choose one" }}
{{- end }}
{{- if and (eq .Values.accounting.volume "persistentVolumeClaim") (gt (int .Values.replicas) 1) (not .Values.accounting.existingSecret) }}
{{- fail (printf "accounting.volume persistentVolumeClaim keeps one SQLite file, which one pod on one node can write, but replicas is %d. Set replicas: 1, or keep the records in PostgreSQL (accounting.existingSecret)." (int .Values.replicas)) }}
{{- end }}
{{- if and .Values.tls.existingSecret (not .Values.tls.caBundle) }}
{{- fail "tls.existingSecret needs tls.caBundle: the base64 PEM of the CA that signed its certificate, so the API server can trust the webhook" }}
{{- end }}
{{- end }}

{{/*
The node agent (templates/agent-daemonset.yaml): its own name, labels and ServiceAccount, so
that neither the scheduler's Deployment selects its pods nor its rights mix with the service's.
*/}}
{{- define "aistack.agentName" -}}
{{- printf "%s-agent" (include "aistack.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "aistack.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "aistack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end }}

{{- define "aistack.agentLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "aistack.agentSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aistack
{{- end }}

{{- define "aistack.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "aistack.agentName" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Service port the API server calls the webhooks on: 9443, where only its client certificate
gets through, when webhook.clientCA is set; else the API's 443.
*/}}
{{- define "aistack.webhookServicePort" -}}
{{- if .Values.webhook.clientCA }}9443{{ else }}443{{ end }}
{{- end }}

{{/*
The Secret holding the allocation key: the given one, or the chart's own.
*/}}
{{- define "aistack.allocationKeySecret" -}}
{{- default (printf "%s-allocation-key" (include "aistack.fullname" .)) .Values.allocationKey.existingSecret }}
{{- end }}
